/* Helpers for the program-level spool tests (test_spool_programs.c): commits whose bytes
 * name their run and index, a config with a spool, the mock's 503 outage on the data keys,
 * what `s3commit run` prints on stdout (its first line, L and W), a feed at a steady rate,
 * and the log read back with `s3commit cat --control` and checked with `s3commit verify`. */
#ifndef S3C_TEST_SPOOLRUN_H
#define S3C_TEST_SPOOLRUN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "mockproc.h"
#include "proc.h"

#define SR_PREFIX "p/"
#define SR_COMMIT_MAX 320 /* bytes of the longest commit sr_commit makes */

/* The bytes of commit i of run r: "run RR commit IIIIIII|" then 150..249 filler bytes that
 * depend on both. Returns the length. */
uint32_t sr_commit(int r, uint32_t i, char out[SR_COMMIT_MAX]);

/* What one `s3commit run` printed on stdout so far: parsed line by line as it arrives;
 * each watermark must be above the one before it (the parse fails the test otherwise). */
struct sr_out {
    bool header; /* the first line: the stage is open */
    uint64_t epoch, recovered_seq, control_seq, first_seq;
    uint64_t max_local, max_durable; /* the highest {"local_seq"} / {"durable_seq"}: 0 none */
    uint64_t nlocal, ndurable;       /* lines of each */
    size_t parsed;                   /* bytes of stdout consumed (whole lines) */
};
void sr_parse(struct sr_out *s, const struct buf *o);

/* A config at path for the mock at endpoint with prefix SR_PREFIX and a spool in
 * spool_dir; ring_bytes for the ring (max_commit_bytes 4096, batches of 256 KiB at most,
 * 8 PUTs in flight, retries given up after 3 attempts and then every 200 ms with the stage
 * degraded); persistence: more "persistence" settings, each after a comma (or ""). */
void sr_config(const char *path, const char *endpoint, const char *spool_dir, uint64_t ring_bytes,
               uint64_t segment_bytes, const char *persistence);

/* Starts s3commit-mock keeping objects in data_dir. */
void sr_mock_start(struct mockproc *m, const char *data_dir);
/* mockproc_http, failing the test (with where the mock waits) if no answer comes in 20 s. */
int sr_http(const struct mockproc *m, const char *method, const char *path, const char *body,
            char *out, size_t outlen);
/* on: every request on SR_PREFIX "log/" is answered 503 (the manifest and the writers'
 * heartbeats still work); off: none is. */
void sr_outage(const struct mockproc *m, bool on);

/* Commits fed to a run's stdin at rate_per_ms from the moment sr_feed_go is called. */
struct sr_feed {
    int run;
    uint32_t n;    /* commits prepared */
    size_t *ends;  /* byte offset after frame i */
    struct buf in; /* the frames */
    size_t sent;   /* bytes written */
    uint64_t t0;   /* when feeding started (0: not yet) */
    double rate_per_ms;
};
void sr_feed_init(struct sr_feed *f, int run, uint32_t n, double rate_per_ms);
void sr_feed_go(struct sr_feed *f);
/* Writes what is due by now (all of it once the rate allows) and reads the run's output,
 * for at most ms. */
void sr_feed_pump(struct sr_feed *f, struct proc *p, int ms);
uint32_t sr_feed_whole(const struct sr_feed *f); /* whole frames written */
void sr_feed_free(struct sr_feed *f);

/* Runs (with stdin closed at once) until its first line and then its exit: the stage
 * replays the spool and drains it. Returns the exit code; out and stderr in p. */
int sr_run_drain(const char *bin, const char *cfg, struct proc *p, struct sr_out *out, int ms);

/* One commit on the chain: its seq and the run and index its bytes name (checked exact). */
struct sr_rec {
    uint64_t seq;
    int run;
    uint32_t index;
};

/* Reads the whole log back with `s3commit cat --config cfg --control`: every commit's bytes
 * must be sr_commit's for the run and index they name; seqs are counted from 1 along the
 * chain past the control records cat reports. *recs (malloc'd) gets the commits in order.
 * Returns how many; *last_seq gets the chain's last seq. */
size_t sr_read_back(const char *bin, const char *cfg, struct sr_rec **recs, uint64_t *last_seq);

/* `s3commit verify`: exit 0, "ok":true, and the commit count and last seq given. */
void sr_verify(const char *bin, const char *cfg, uint64_t commits, uint64_t last_seq);

/* The log holds run 0's commits 0..n-1 at seqs first_seq.., nothing else but control
 * records, and ends at last_seq (read back, then verify). */
void sr_check_run0(const char *bin, const char *cfg, uint64_t first_seq, uint64_t n,
                   uint64_t last_seq);

uint64_t sr_rss_kb(pid_t pid);          /* VmRSS from /proc/PID/status */
uint64_t sr_dir_bytes(const char *dir); /* bytes in the directory's regular files */

#endif
