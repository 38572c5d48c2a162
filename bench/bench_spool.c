/* bench-spool: the local spool (docs/spool.md) against the disk it writes to, in one run on
 * one directory: (a) the raw rate of write+fdatasync, as pg_test_fsync measures it (an
 * overwrite of a preallocated file) and as the spool does it (appends to a growing file);
 * (b) locally durable commits/s and MB/s (L, s3c_local_seq) at 128 B and 4 KiB with 1, 2
 * and 4 producers, with p50/p99 commit-to-local-ack latency (a local subscriber times L's
 * moves; producers time one commit in 16), then at half of the 128 B peak, at 10,000/s, and
 * at full speed with a 4 MiB ring (at full speed the ring is the backlog, so the latency);
 * (c) end-to-end S3 throughput (W) at 128 B, 2 producers, spool off and on, in three
 * alternating pairs. The stage runs against s3commit-mock --store none (started and stopped
 * by pid). Every case is bounded in time.
 *
 * (d) a sweep: 128 B commits paced at 10,000/s to 4,000,000/s (1 producer below 100,000/s, else 2),
 * each against the raw lines of (a) and against (e), and the highest rate whose p99 met
 * each target. (e) Every paced case takes turns with a raw probe of its own group size
 * (bsp_probe_turn), which also gives what an ideal group commit would have had. Each
 * timed case first lets the disk settle (bsp_settle).
 *
 * Usage: bench-spool [seconds per case, default 3]
 *                    [only: raw|local|local4k|paced|light|half|sweep|e2e|e2e-on|e2e-off] [rate]
 * (e2e-on and e2e-off run one side of the pairs only, for a profiler: no ratio. half runs
 * the 128 B, 2-producer peak and the half-load case after it; with a rate, that case alone
 * at that rate. local4k runs the 4 KiB peaks alone.) Paced producers submit what is due in
 * 1 ms slices; $S3C_BENCH_PACE_US sets another slice. $S3C_BENCH_NO_SKIP=1 turns SKIP frames
 * off in every case (an A/B of them; the peaks always run without).
 * The directory: $S3C_BENCH_DIR, else the build directory (beside bin/); its filesystem is
 * printed, and tmpfs is refused (an fsync there measures nothing). Never run by make test. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "hist.h"
#include "mockproc.h"
#include "s3commit.h"
#include "spool/spool.h" /* spool_test_no_skip: the peaks measure the disk's own rate */

#define BSP_SAMPLE_EVERY 16       /* producers time one commit in this many */
#define BSP_MAX_GROUPS (4u << 20) /* L moves recorded per case */
#define BSP_MAX_PRODUCERS 4

static struct mockproc bsp_mock;
/* $S3C_BENCH_NO_SKIP=1: every chunk's records written, in every case. */
static bool bsp_no_skip;
/* Paced producers submit what is due in slices of this long ($S3C_BENCH_PACE_US). */
static uint64_t bsp_pace_ns = 1000000;
static size_t bsp_raw_bytes[8]; /* the append cases of (a): size and mean latency */
static double bsp_raw_mean_us[8], bsp_raw_p99_us[8];
static int bsp_nraw;
static size_t bsp_ow_bytes[8]; /* the overwrite cases of (a) (pg_test_fsync's way) */
static double bsp_ow_mean_us[8];
static int bsp_now;
static char bsp_root[1024];             /* the bench's own directory (removed at the end) */
static long bsp_ring_bytes = 64L << 20; /* pipeline.ring_bytes of the stages opened */

static void bsp_sleep_ns(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
    nanosleep(&ts, NULL);
}

static void bsp_rmdir(const char *dir);
static char bsp_cur[1100]; /* the spool directory of the case running, "" when none */

/* Stops the mock and removes what the bench wrote (a 4 KiB case leaves gigabytes). */
static void bsp_die(const char *what)
{
    fprintf(stderr, "bench-spool: %s\n", what);
    if (bsp_mock.pid)
        mockproc_stop(&bsp_mock);
    if (bsp_cur[0])
        bsp_rmdir(bsp_cur);
    if (bsp_root[0])
        bsp_rmdir(bsp_root);
    exit(1);
}

/* Removes the files of a flat directory (a spool's segments and LOCK), then it. */
static void bsp_rmdir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char p[PATH_MAX + 256];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

/* The mount holding path (longest mount point that prefixes it): source and fs type. */
static void bsp_mount_of(const char *path, char *src, char *type, size_t cap)
{
    FILE *f = fopen("/proc/self/mounts", "r");
    size_t best = 0;
    char dev[512], mnt[PATH_MAX], fst[64];
    snprintf(src, cap, "?");
    snprintf(type, cap, "?");
    if (!f)
        return;
    while (fscanf(f, "%511s %4095s %63s %*[^\n]", dev, mnt, fst) == 3) {
        size_t n = strlen(mnt);
        bool under = strncmp(path, mnt, n) == 0 && (path[n] == '/' || path[n] == 0 || n == 1);
        if (under && n >= best) {
            best = n;
            snprintf(src, cap, "%s", dev);
            snprintf(type, cap, "%s", fst);
        }
    }
    fclose(f);
}

/* Bytes the bench wrote since the last settle. A virtual disk's host writes them back after
 * the guest's fdatasync returned: after 1 s of 1 MiB appends (380 MB), an 8 KiB append +
 * fdatasync stopped for 16-31 ms within the next 4 s, against a 2 ms max before; a sweep
 * started right after another one's raw lines had p99 8-57 ms at 10,000/s, 1.2-1.6 ms
 * 15 s later. So a timed case waits first, a second per BSP_SETTLE_BPS written (8 s at
 * most, and 8 s before the first one: the bench does not know what ran before it). */
#define BSP_SETTLE_BPS 200e6
static double bsp_dirty = 8 * BSP_SETTLE_BPS; /* what ran before: the first case waits 8 s */
static uint64_t bsp_settle_ms;

static void bsp_settle(void)
{
    double s = bsp_dirty / BSP_SETTLE_BPS;
    s = s > 8 ? 8 : s;
    bsp_settle_ms = (uint64_t)(s * 1000);
    bsp_sleep_ns(bsp_settle_ms * 1000000u);
    bsp_dirty = 0;
}

/* ---- (a) raw write + fdatasync --------------------------------------------------------- */

static void bsp_raw(const char *mode, size_t size, double secs)
{
    char path[PATH_MAX + 32];
    bool append = strcmp(mode, "append") == 0;
    snprintf(path, sizeof(path), "%s/raw.dat", bsp_root);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | (append ? O_APPEND : 0) | O_CLOEXEC, 0600);
    if (fd < 0)
        bsp_die("cannot create the raw test file");
    char *buf = aligned_alloc(4096, size);
    memset(buf, 0x5a, size);
    if (!append) { /* pg_test_fsync: a 16 MiB file written and synced first, then overwritten */
        for (size_t off = 0; off < (16u << 20); off += size)
            if (pwrite(fd, buf, size, (off_t)off) != (ssize_t)size)
                bsp_die("cannot preallocate the raw test file");
        fsync(fd);
    }
    struct hist h;
    hist_init(&h);
    bsp_settle();
    uint64_t t0 = s3c__now_ns(), end = t0 + (uint64_t)(secs * 1e9), n = 0, now = t0;
    while (now < end && n < 1000000) {
        uint64_t a = now;
        ssize_t w = append ? write(fd, buf, size) : pwrite(fd, buf, size, 0);
        if (w != (ssize_t)size || fdatasync(fd) != 0)
            bsp_die("raw write or fdatasync failed");
        now = s3c__now_ns();
        hist_record(&h, (now - a) / 1000);
        n++;
    }
    double dt = (double)(now - t0) / 1e9;
    bsp_dirty += (double)n * (double)size;
    printf("{\"bench\":\"spool\",\"case\":\"raw_fdatasync\",\"mode\":\"%s\",\"bytes\":%zu,"
           "\"ops\":%" PRIu64 ",\"ops_per_s\":%.0f,\"mb_per_s\":%.1f,\"mean_us\":%.0f,"
           "\"p50_us\":%" PRIu64 ",\"p99_us\":%" PRIu64 ",\"max_us\":%" PRIu64
           ",\"settle_ms\":%" PRIu64 "}\n",
           mode, size, n, (double)n / dt, (double)n * (double)size / dt / 1e6,
           (double)h.sum / (double)(n ? n : 1), hist_quantile(&h, 0.5), hist_quantile(&h, 0.99),
           h.max, bsp_settle_ms);
    fflush(stdout);
    if (!append && bsp_now < 8) {
        bsp_ow_bytes[bsp_now] = size;
        bsp_ow_mean_us[bsp_now++] = (double)h.sum / (double)(n ? n : 1);
    }
    if (append && bsp_nraw < 8) {
        bsp_raw_bytes[bsp_nraw] = size;
        bsp_raw_p99_us[bsp_nraw] = (double)hist_quantile(&h, 0.99);
        bsp_raw_mean_us[bsp_nraw++] = (double)h.sum / (double)(n ? n : 1);
    }
    close(fd);
    unlink(path);
    free(buf);
}

/* ---- (e) the raw probe, interleaved with a paced case ----------------------------------
 * A neighbour's load on a shared disk comes and goes within seconds, and the raw lines of
 * (a), taken before the cases, do not see what a case meets. So a paced case holds its
 * producers every BSP_RUN_NS (the first time after BSP_FIRST_RUN_NS: the preparer's zeros
 * after the case's first roll take half a second), waits until every commit submitted is
 * locally durable, and for BSP_PROBE_NS times write + fdatasync of the case's own write
 * group, then lets them go again. The probe writes as the spool does at these rates and as
 * pg_test_fsync does: O_DIRECT over a file written and synced before the case, one group
 * after the other. Raw and spool take turns within every second; the spool's own
 * background work (a later roll's zeros, deletes) may still run during a probe. */
#define BSP_FIRST_RUN_NS 700000000u
#define BSP_RUN_NS 350000000u
#define BSP_PROBE_NS 150000000u
#define BSP_PACED_NS 100000000u    /* then the same writes, one per group interval of the case */
#define BSP_PROBE_OPS 65536u       /* ops timed in one probe, at most */
#define BSP_PROBE_FILE (64u << 20) /* the probe's file: written over from its start again */

struct bsp_probe {
    int fd;
    bool direct;     /* O_DIRECT (else the page cache: the filesystem refused it) */
    uint64_t pos;    /* where the next write goes */
    size_t size;     /* the write size of the last probe: the case's group, whole blocks */
    struct hist raw; /* each write + fdatasync */
    /* A commit arriving at a random moment of the probe, with the probe's writes as the
     * groups of an ideal group commit (no cost but the disk's): it waits out the write in
     * progress and then the next one, which carries it. Sampled every 5 us. The probe
     * writes back to back, so this is a loaded disk's: at a light load a commit often finds
     * the disk idle and waits one write. */
    struct hist ideal;
    /* The same writes one per group interval of the case (paced_ns, the mean so far), as
     * the spool's groups come at that load: each finds the disk idle since the last. On
     * this machine's virtual disk an O_DIRECT write after 0.6 ms idle took twice one
     * written back to back (p50 148 us against 74), and a light load's group pays that. */
    struct hist paced;
    uint64_t paced_ns;
    uint32_t gmark;          /* the groups recorded before the run now going (bsp_groups) */
    uint64_t turns, gave_up; /* holds, and those with no probe (the producers did not stop) */
    uint64_t *start, *end;
    unsigned char *buf;
    size_t bufcap;
};

/* Creates the probe's file, BSP_PROBE_FILE of zeros, synced (before the case's settle). */
static void bsp_probe_open(struct bsp_probe *p)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/probe.dat", bsp_root);
    p->direct = true;
    p->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_DIRECT | O_CLOEXEC, 0600);
    if (p->fd < 0 && errno == EINVAL) {
        p->direct = false;
        p->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    }
    if (p->fd < 0)
        bsp_die("cannot create the probe file");
    unlink(path); /* gone with the fd */
    if (p->bufcap < (1u << 20)) {
        free(p->buf);
        p->buf = aligned_alloc(4096, 1u << 20);
        if (!p->buf)
            bsp_die("out of memory");
        p->bufcap = 1u << 20;
    }
    memset(p->buf, 0, p->bufcap);
    for (uint64_t off = 0; off < BSP_PROBE_FILE; off += 1u << 20)
        if (pwrite(p->fd, p->buf, 1u << 20, (off_t)off) != (ssize_t)(1u << 20))
            bsp_die("cannot write the probe file");
    if (fdatasync(p->fd) != 0)
        bsp_die("cannot sync the probe file");
    memset(p->buf, 0x5a, p->bufcap);
    bsp_dirty += BSP_PROBE_FILE;
    p->pos = 0;
    p->size = 0;
    p->turns = p->gave_up = 0;
    hist_init(&p->raw);
    hist_init(&p->ideal);
    hist_init(&p->paced);
    p->paced_ns = 0;
    p->gmark = 0;
    if (!p->start) {
        p->start = calloc(BSP_PROBE_OPS, sizeof(uint64_t));
        p->end = calloc(BSP_PROBE_OPS, sizeof(uint64_t));
    }
}

static void bsp_probe_close(struct bsp_probe *p)
{
    close(p->fd);
    p->fd = -1;
}

/* One probe: write + fdatasync of size bytes, back to back, for ns. */
static void bsp_probe_run(struct bsp_probe *p, size_t size, uint64_t ns)
{
    size = (size + 4095) & ~(size_t)4095;
    size = size > BSP_PROBE_FILE ? BSP_PROBE_FILE : size;
    if (size > p->bufcap) {
        free(p->buf);
        p->buf = aligned_alloc(4096, size);
        if (!p->buf)
            bsp_die("out of memory");
        memset(p->buf, 0x5a, size);
        p->bufcap = size;
    }
    p->size = size;
    uint32_t n = 0;
    uint64_t until = s3c__now_ns() + ns;
    while (n < BSP_PROBE_OPS) {
        if (p->pos + size > BSP_PROBE_FILE)
            p->pos = 0;
        p->start[n] = s3c__now_ns();
        if (pwrite(p->fd, p->buf, size, (off_t)p->pos) != (ssize_t)size || fdatasync(p->fd) != 0)
            bsp_die("probe write or fdatasync failed");
        p->end[n] = s3c__now_ns();
        hist_record(&p->raw, (p->end[n] - p->start[n]) / 1000);
        p->pos += size;
        bsp_dirty += (double)size;
        if (p->end[n++] >= until)
            break;
    }
    for (uint32_t i = 0; i + 1 < n; i++)
        for (uint64_t t = p->start[i]; t < p->start[i + 1]; t += 5000)
            hist_record(&p->ideal, (p->end[i + 1] - t) / 1000);
}

/* The same write + fdatasync, one starting every interval_ns (at once after one that ran
 * over), for ns: the raw time of a write group at the case's own pace. */
static void bsp_probe_paced(struct bsp_probe *p, uint64_t interval_ns, uint64_t ns)
{
    prctl(PR_SET_TIMERSLACK, 1UL); /* else each sleep oversleeps by 50 us */
    uint64_t t0 = s3c__now_ns(), until = t0 + ns;
    p->paced_ns = interval_ns;
    for (uint64_t k = 1;; k++) {
        if (p->pos + p->size > BSP_PROBE_FILE)
            p->pos = 0;
        uint64_t a = s3c__now_ns();
        if (pwrite(p->fd, p->buf, p->size, (off_t)p->pos) != (ssize_t)p->size ||
            fdatasync(p->fd) != 0)
            bsp_die("probe write or fdatasync failed");
        uint64_t b = s3c__now_ns();
        hist_record(&p->paced, (b - a) / 1000);
        p->pos += p->size;
        bsp_dirty += (double)p->size;
        uint64_t next = t0 + k * interval_ns;
        if (next >= until)
            break;
        if (next > b)
            bsp_sleep_ns(next - b);
    }
}

/* ---- stages ------------------------------------------------------------------------ */

static s3c_stage *bsp_open(const char *spool_dir)
{
    char json[PATH_MAX + 1024], spool[PATH_MAX + 128] = "", err[512];
    s3c_config *cfg;
    s3c_stage *st;
    if (spool_dir)
        snprintf(spool, sizeof(spool), ",\"spool\":{\"dir\":\"%s\",\"max_bytes\":%lld}", spool_dir,
                 4LL << 30); /* room for a case at disk speed: the spool never fills */
    snprintf(json, sizeof(json),
             "{\"s3\":{\"endpoint\":\"%s\",\"bucket\":\"commits\",\"prefix\":\"bench/\"},"
             "\"persistence\":{\"batch_timeout_ms\":5},\"pipeline\":{\"ring_bytes\":%ld}%s}",
             bsp_mock.endpoint, bsp_ring_bytes, spool);
    if (s3c_config_parse(json, strlen(json), &cfg, err, sizeof(err)) != 0 ||
        s3c_stage_open(cfg, &st, err, sizeof(err)) != 0)
        bsp_die(err);
    s3c_config_free(cfg);
    bsp_sleep_ns(200000000); /* let the pool warm up */
    return st;
}

/* L's moves, recorded by a local subscriber on the spool's thread: (L, when). */
struct bsp_groups {
    uint64_t *l, *ns;
    _Atomic uint32_t n; /* read by the main thread while the case runs */
};

static void bsp_on_local(void *ctx, uint64_t l, int err)
{
    struct bsp_groups *g = ctx;
    if (err || g->n >= BSP_MAX_GROUPS)
        return;
    g->l[g->n] = l;
    g->ns[g->n] = s3c__now_ns();
    g->n++;
}

struct bsp_prod {
    s3c_stage *st;
    size_t size;
    uint64_t deadline_ns;
    double rate;        /* commits/s; 0 = as fast as the stage takes them */
    uint64_t *seq, *t0; /* sampled commits: seq and submit time */
    uint64_t nsamp, cap;
    uint64_t commits;
    uint64_t cpu_ns;           /* the producer's own CPU time */
    uint64_t held_cpu_ns;      /* of which while held */
    _Atomic uint64_t last_seq; /* the last seq it submitted */
    _Atomic uint64_t held;     /* the hold (bsp_turn) it stopped for */
};

/* The main thread holds the producers while the interleaved raw probe runs (bsp_drive):
 * odd while holding; each hold has its own number, which the producers echo in held. */
static _Atomic uint64_t bsp_turn;

static uint64_t bsp_cpu_ns(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *bsp_producer(void *p)
{
    struct bsp_prod *a = p;
    char buf[4096];
    memset(buf, 0x42, sizeof(buf));
    uint64_t start = s3c__now_ns(), cpu0 = bsp_cpu_ns(CLOCK_THREAD_CPUTIME_ID);
    uint64_t slice = bsp_pace_ns, slices = 0, base = 0;
    if (a->rate > 0)
        prctl(PR_SET_TIMERSLACK, 1UL); /* else a sleep oversleeps by 50 us */
    uint64_t held_since = 0;           /* thread CPU when the hold began */
    while (s3c__now_ns() < a->deadline_ns) {
        uint64_t turn = atomic_load(&bsp_turn);
        if (turn & 1) { /* held: the pacing starts again when let go */
            if (atomic_load(&a->held) != turn) {
                held_since = bsp_cpu_ns(CLOCK_THREAD_CPUTIME_ID);
                atomic_store(&a->held, turn); /* after its last submit: last_seq is final */
            }
            bsp_sleep_ns(50000);
            start = s3c__now_ns(), slices = 0, base = a->commits;
            continue;
        }
        if (held_since) {
            a->held_cpu_ns += bsp_cpu_ns(CLOCK_THREAD_CPUTIME_ID) - held_since;
            held_since = 0;
        }
        int burst = 256;
        if (a->rate > 0) { /* paced: what is due by the end of each slice */
            uint64_t due = base + (uint64_t)(a->rate * (double)(++slices * slice) / 1e9);
            burst = (int)(due - a->commits);
            uint64_t next = start + (slices - 1) * slice, now = s3c__now_ns();
            if (next > now)
                bsp_sleep_ns(next - now);
        }
        for (int i = 0; i < burst; i++) {
            if (i % 64 == 63 && (atomic_load_explicit(&bsp_turn, memory_order_relaxed) & 1))
                break; /* a producer behind its pacing would not stop for a hold */
            /* Only sampled commits read the clock: the producer's cost stays the stage's. */
            bool sample = a->commits++ % BSP_SAMPLE_EVERY == 0 && a->nsamp < a->cap;
            uint64_t t0 = sample ? s3c__now_ns() : 0, seq;
            if (s3c_submit(a->st, buf, a->size, 10000, &seq) != 0)
                bsp_die("submit failed");
            atomic_store_explicit(&a->last_seq, seq, memory_order_relaxed);
            if (sample) {
                a->seq[a->nsamp] = seq;
                a->t0[a->nsamp++] = t0;
            }
        }
    }
    a->cpu_ns = bsp_cpu_ns(CLOCK_THREAD_CPUTIME_ID) - cpu0;
    return NULL;
}

struct bsp_run {
    double local_cps, local_mbps, w_cps;
    uint64_t p50_us, p99_us, p999_us, max_us, samples;
    double groups_per_s, commits_per_group, group_gap_us;
    uint64_t spool_reads;
    uint64_t skipped;   /* commits S3 took first: spooled as SKIP frames, without their bytes */
    double syncs_per_s; /* the spool's fdatasyncs (s3c_stats.spool_syncs) */
    double stage_ns, producer_ns; /* CPU per commit made durable (L with a spool, else W) */
    double run_s;                 /* the producers' time: secs, less the probes */
    double commits_per_object;    /* of the objects made durable in the case */
};

/* Holds the producers, waits until everything they submitted is locally durable, probes
 * the disk with a write group of the case's size so far, lets them go. Returns false when
 * they did not stop, or their commits did not become durable, within 2 s: no probe then,
 * and the time counts as theirs. */
static bool bsp_probe_turn(s3c_stage *st, struct bsp_prod *a, int producers, uint64_t l0,
                           const struct bsp_groups *g, size_t size, struct bsp_probe *p)
{
    uint64_t turn = atomic_fetch_add(&bsp_turn, 1) + 1, give_up = s3c__now_ns() + 2000000000u;
    bool held = true;
    p->turns++;
    for (int i = 0; i < producers && held; i++) {
        while (atomic_load(&a[i].held) != turn && s3c__now_ns() < give_up)
            bsp_sleep_ns(20000);
        held = atomic_load(&a[i].held) == turn;
    }
    uint64_t last = 0;
    for (int i = 0; i < producers; i++) {
        uint64_t q = atomic_load_explicit(&a[i].last_seq, memory_order_relaxed);
        last = q > last ? q : last;
    }
    while (held && s3c_local_seq(st) < last && s3c__now_ns() < give_up)
        bsp_sleep_ns(50000);
    held = held && s3c_local_seq(st) >= last;
    if (held) {
        uint32_t groups = atomic_load(&g->n);
        double cpg = groups ? (double)(s3c_local_seq(st) - l0) / groups : 1;
        bsp_probe_run(p, (size_t)(cpg * (double)(size + 16) + 48), BSP_PROBE_NS);
        /* the mean group interval of the run just held (its groups, from the first) */
        uint32_t k0 = p->gmark, k = groups < BSP_MAX_GROUPS ? groups : BSP_MAX_GROUPS;
        if (k > k0 + 1 && g->ns[k - 1] > g->ns[k0])
            bsp_probe_paced(p, (g->ns[k - 1] - g->ns[k0]) / (k - 1 - k0), BSP_PACED_NS);
    } else {
        p->gave_up++;
    }
    uint32_t n = atomic_load(&g->n); /* the next run's groups start here */
    p->gmark = n < BSP_MAX_GROUPS ? n : BSP_MAX_GROUPS;
    atomic_fetch_add(&bsp_turn, 1);
    return held;
}

/* Drives a stage for secs: L and W by the deadline, then a drain that must be whole. With
 * probe, the producers give way to it in turns (bsp_probe_turn); rates are then per second
 * of the producers' time. */
static struct bsp_run bsp_drive(const char *spool_dir, int producers, size_t size, double secs,
                                double rate, struct bsp_probe *probe)
{
    s3c_stage *st = bsp_open(spool_dir);
    static struct bsp_groups g;
    static struct bsp_prod a[BSP_MAX_PRODUCERS];
    if (!g.l) {
        g.l = calloc(BSP_MAX_GROUPS, sizeof(uint64_t));
        g.ns = calloc(BSP_MAX_GROUPS, sizeof(uint64_t));
    }
    g.n = 0;
    if (spool_dir && s3c_subscribe_local(st, bsp_on_local, &g) != 0)
        bsp_die("cannot subscribe to L");
    struct s3c_stats s0, s1;
    s3c_stats_get(st, &s0);
    uint64_t l0 = s3c_local_seq(st), t0 = s3c__now_ns(),
             cpu0 = bsp_cpu_ns(CLOCK_PROCESS_CPUTIME_ID),
             main0 = bsp_cpu_ns(CLOCK_THREAD_CPUTIME_ID);
    uint64_t deadline = t0 + (uint64_t)(secs * 1e9);
    pthread_t t[BSP_MAX_PRODUCERS];
    for (int i = 0; i < producers; i++) {
        uint64_t cap = (uint64_t)(secs * 8e6 / BSP_SAMPLE_EVERY) + 1024; /* 8M commits/s */
        if (!a[i].seq) {
            a[i].seq = calloc(cap, sizeof(uint64_t));
            a[i].t0 = calloc(cap, sizeof(uint64_t));
            a[i].cap = cap;
        }
        a[i] = (struct bsp_prod){.st = st,
                                 .size = size,
                                 .deadline_ns = deadline,
                                 .rate = rate / producers,
                                 .seq = a[i].seq,
                                 .t0 = a[i].t0,
                                 .cap = a[i].cap};
        pthread_create(&t[i], NULL, bsp_producer, &a[i]);
    }
    uint64_t now = s3c__now_ns(), run_ns = 0;
    while (now < deadline) {
        uint64_t slice = now == t0 ? BSP_FIRST_RUN_NS : BSP_RUN_NS;
        uint64_t until = probe && deadline - now > slice + BSP_PROBE_NS + BSP_PACED_NS + 50000000u
                             ? now + slice
                             : deadline;
        bsp_sleep_ns(until - now);
        uint64_t turn_at = s3c__now_ns();
        run_ns += turn_at - now;
        if (until < deadline && !bsp_probe_turn(st, a, producers, l0, &g, size, probe))
            run_ns += s3c__now_ns() - turn_at; /* they ran on */
        now = s3c__now_ns();
    }
    uint64_t l1 = s3c_local_seq(st);
    /* The process's CPU but the producers' and this thread's (the probes) is the stage's. */
    uint64_t cpu =
        bsp_cpu_ns(CLOCK_PROCESS_CPUTIME_ID) - cpu0 - (bsp_cpu_ns(CLOCK_THREAD_CPUTIME_ID) - main0);
    s3c_stats_get(st, &s1);
    double dt = (double)run_ns / 1e9;
    uint64_t total = 0, pcpu = 0, pheld = 0;
    for (int i = 0; i < producers; i++) {
        pthread_join(t[i], NULL);
        total += a[i].commits;
        pcpu += a[i].cpu_ns;
        pheld += a[i].held_cpu_ns;
    }
    struct bsp_run r = {0};
    uint64_t lc = spool_dir ? l1 - l0 : 0, wc = s1.commits_durable - s0.commits_durable;
    double n = (double)(spool_dir ? lc : wc);
    r.stage_ns = n > 0 && cpu > pcpu ? (double)(cpu - pcpu) / n : 0;
    r.producer_ns = n > 0 ? (double)(pcpu - pheld) / n : 0; /* their waits while held left out */
    r.local_cps = (double)lc / dt;
    r.local_mbps = (double)lc * (double)size / dt / 1e6;
    r.w_cps = (double)wc / dt;
    r.spool_reads = s1.spool_reads;
    r.skipped = s1.spool_skipped - s0.spool_skipped;
    r.syncs_per_s = (double)(s1.spool_syncs - s0.spool_syncs) / dt;
    r.run_s = dt;
    if (s1.batches_sent > s0.batches_sent)
        r.commits_per_object = (double)(s1.batch_commits_sum - s0.batch_commits_sum) /
                               (double)(s1.batches_sent - s0.batches_sent);

    struct s3c_close_report rep;
    struct s3c_stage_info info;
    s3c_stage_info(st, &info);
    if (s3c_stage_drain(st, &rep) != 0 || rep.durable_seq != info.control_seq + total) {
        fprintf(stderr, "bench-spool: drain lost seqs %" PRIu64 "..%" PRIu64 "\n",
                rep.lost_first_seq, rep.lost_last_seq);
        bsp_die("the drain was not whole");
    }
    s3c_stage_close(st, NULL);
    if (!spool_dir)
        return r;

    /* Latency: each sampled commit is acked by the first group whose L reaches it. */
    struct hist h;
    hist_init(&h);
    for (int i = 0; i < producers; i++) {
        uint32_t lo = 0;
        for (uint64_t k = 0; k < a[i].nsamp; k++) { /* a producer's seqs rise: a moving cursor */
            while (lo < g.n && g.l[lo] < a[i].seq[k])
                lo++;
            if (lo == g.n)
                break;
            hist_record(&h, (g.ns[lo] - a[i].t0[k]) / 1000);
        }
    }
    r.samples = h.n;
    r.p50_us = hist_quantile(&h, 0.5);
    r.p99_us = hist_quantile(&h, 0.99);
    r.p999_us = hist_quantile(&h, 0.999);
    r.max_us = h.max;
    uint32_t gin = 0; /* the groups inside the window */
    for (uint32_t k = 0; k < g.n; k++)
        gin += g.ns[k] >= t0 && g.ns[k] <= deadline;
    r.groups_per_s = (double)gin / dt;
    r.commits_per_group = gin ? (double)lc / gin : 0;
    r.group_gap_us = gin > 1 ? dt * 1e6 / gin : 0;
    return r;
}

static int bsp_case_no;

static void bsp_spool_dir(char *out, size_t cap)
{
    snprintf(bsp_cur, sizeof(bsp_cur), "%s/spool-%d", bsp_root, ++bsp_case_no);
    snprintf(out, cap, "%s", bsp_cur);
}

/* The case of (a) whose size is nearest (in log terms) to a write group, or -1. */
static int bsp_nearest(const size_t *sizes, int n, double group_bytes)
{
    int best = -1;
    double bd = 0;
    for (int i = 0; i < n; i++) {
        double d = group_bytes > (double)sizes[i] ? group_bytes / (double)sizes[i]
                                                  : (double)sizes[i] / group_bytes;
        if (best < 0 || d < bd)
            best = i, bd = d;
    }
    return best;
}

/* Two raw append fdatasyncs (mean; with p99 set, their p99) of the size nearest to a write
 * group: the p99 target of the issue. 0 when (a) did not run. */
static double bsp_two_fsyncs_us(double group_bytes, bool p99)
{
    int best = bsp_nearest(bsp_raw_bytes, bsp_nraw, group_bytes);
    return best < 0 ? 0 : 2 * (p99 ? bsp_raw_p99_us[best] : bsp_raw_mean_us[best]);
}

/* The same with pg_test_fsync's overwrites (8 or 64 KiB): the stricter reading of "raw". */
static double bsp_two_overwrites_us(double group_bytes)
{
    int best = bsp_nearest(bsp_ow_bytes, bsp_now, group_bytes);
    return best < 0 ? 0 : 2 * bsp_ow_mean_us[best];
}

/* The last bsp_local case: its p99 and its two targets (0: no raw line to compare with). */
static double bsp_last_p99, bsp_last_target, bsp_last_loose, bsp_last_probe, bsp_last_paced;
static double bsp_last_ideal; /* the ideal group commit's p99 on the probe's writes, 0: none */

static double bsp_local(const char *name, int producers, size_t size, double secs, double rate)
{
    char dir[PATH_MAX];
    bsp_spool_dir(dir, sizeof(dir));
    static struct bsp_probe probe;
    bsp_settle_ms = 0;
    if (rate > 0) {
        bsp_settle();
        bsp_probe_open(&probe);
    }
    /* The peaks measure what the disk takes: every commit's bytes written, none skipped
     * because the mock took it first (a paced case is as users run it, and says how many
     * it skipped). */
    bool skipping = rate > 0 && !bsp_no_skip;
    spool_test_no_skip = !skipping;
    struct bsp_run r = bsp_drive(dir, producers, size, secs, rate, rate > 0 ? &probe : NULL);
    spool_test_no_skip = false;
    bsp_rmdir(dir);
    bsp_cur[0] = 0;
    bsp_dirty += r.local_cps * r.run_s * (double)(size + 16); /* the probe counts its own */
    char pj[1536] = "";
    double two_probe = 0, two_paced = 0, ideal = 0;
    if (rate > 0 && probe.raw.n == 0) {
        bsp_probe_close(&probe);
        snprintf(pj, sizeof(pj),
                 ",\"settle_ms\":%" PRIu64 ",\"probe_turns\":%" PRIu64 ",\"probe_gave_up\":%" PRIu64
                 ",\"probe_ops\":0,\"two_probe_p99_us\":null,"
                 "\"p99_met_probe\":null,\"ideal_group_commit_p99_us\":null,"
                 "\"paced_probe_ops\":0,\"two_paced_probe_p99_us\":null,"
                 "\"p99_met_paced_probe\":null",
                 bsp_settle_ms, probe.turns, probe.gave_up);
    } else if (rate > 0) {
        bsp_probe_close(&probe);
        const struct hist *ph = &probe.raw;
        two_probe = 2 * (double)hist_quantile(ph, 0.99);
        ideal = probe.ideal.n ? (double)hist_quantile(&probe.ideal, 0.99) : 0;
        snprintf(pj, sizeof(pj),
                 ",\"settle_ms\":%" PRIu64 ",\"probe_turns\":%" PRIu64 ",\"probe_gave_up\":%" PRIu64
                 ",\"probe_mode\":\"%s\",\"probe_bytes\":%zu,"
                 "\"probe_ops\":%" PRIu64 ",\"probe_mean_us\":%.0f,"
                 "\"probe_p50_us\":%" PRIu64 ",\"probe_p99_us\":%" PRIu64
                 ",\"probe_max_us\":%" PRIu64 ",\"two_probe_p99_us\":%.0f,"
                 "\"p99_met_probe\":%s,\"p99_over_two_probe_p99\":%.2f,"
                 "\"ideal_group_commit_p99_us\":%" PRIu64 ",\"p99_over_ideal\":%.2f,"
                 "\"p99_met_ideal\":%s,\"ideal_over_two_probe_p99\":%.2f",
                 bsp_settle_ms, probe.turns, probe.gave_up,
                 probe.direct ? "odirect_overwrite" : "overwrite", probe.size, ph->n,
                 (double)ph->sum / (double)(ph->n ? ph->n : 1), hist_quantile(ph, 0.5),
                 hist_quantile(ph, 0.99), ph->max, two_probe,
                 (double)r.p99_us <= two_probe ? "true" : "false",
                 two_probe > 0 ? (double)r.p99_us / two_probe : 0,
                 hist_quantile(&probe.ideal, 0.99), ideal > 0 ? (double)r.p99_us / ideal : 0,
                 ideal > 0 && (double)r.p99_us <= ideal ? "true" : "false",
                 two_probe > 0 ? ideal / two_probe : 0);
        const struct hist *qh = &probe.paced;
        size_t n = strlen(pj);
        if (qh->n) {
            two_paced = 2 * (double)hist_quantile(qh, 0.99);
            snprintf(pj + n, sizeof(pj) - n,
                     ",\"paced_probe_interval_us\":%.0f,\"paced_probe_ops\":%" PRIu64
                     ",\"paced_probe_mean_us\":%.0f,\"paced_probe_p50_us\":%" PRIu64
                     ",\"paced_probe_p99_us\":%" PRIu64 ",\"two_paced_probe_p99_us\":%.0f,"
                     "\"p99_met_paced_probe\":%s,\"p99_over_two_paced_probe_p99\":%.2f",
                     (double)probe.paced_ns / 1000, qh->n, (double)qh->sum / (double)qh->n,
                     hist_quantile(qh, 0.5), hist_quantile(qh, 0.99), two_paced,
                     (double)r.p99_us <= two_paced ? "true" : "false",
                     (double)r.p99_us / two_paced);
        } else {
            snprintf(pj + n, sizeof(pj) - n,
                     ",\"paced_probe_ops\":0,\"two_paced_probe_p99_us\":null,"
                     "\"p99_met_paced_probe\":null");
        }
    }
    bsp_last_probe = two_probe, bsp_last_paced = two_paced, bsp_last_ideal = ideal;
    /* A group's bytes: records (16-byte header + payload) and a 48-byte frame per chunk. */
    double gbytes = r.commits_per_group * (double)(size + 16) + 48;
    double target = bsp_two_fsyncs_us(gbytes, false), loose = bsp_two_fsyncs_us(gbytes, true);
    double strict = bsp_two_overwrites_us(gbytes);
    bsp_last_p99 = (double)r.p99_us, bsp_last_target = target, bsp_last_loose = loose;
    char rj[512]; /* against (a); null when it did not run before (the sweep alone) */
    if (bsp_nraw > 0)
        snprintf(rj, sizeof(rj),
                 "\"target_p99_us\":%.0f,\"p99_met\":%s,\"two_raw_p99_us\":%.0f,"
                 "\"two_overwrite_mean_us\":%.0f,\"p99_met_overwrite\":%s",
                 target, (double)r.p99_us <= target ? "true" : "false", loose, strict,
                 strict > 0 && (double)r.p99_us <= strict ? "true" : "false");
    else
        snprintf(rj, sizeof(rj),
                 "\"target_p99_us\":null,\"p99_met\":null,\"two_raw_p99_us\":null,"
                 "\"two_overwrite_mean_us\":null,\"p99_met_overwrite\":null");
    printf("{\"bench\":\"spool\",\"case\":\"%s\",\"ring_mib\":%ld,\"commit_bytes\":%zu,"
           "\"producers\":%d,\"rate_commits_per_s\":%.0f,\"pace_us\":%.0f,\"local_commits_per_s\":%"
           ".0f,\"local_mb_"
           "per_s\":%.1f,"
           "\"s3_commits_per_s\":%.0f,\"p50_us\":%" PRIu64 ",\"p99_us\":%" PRIu64
           ",\"p999_us\":%" PRIu64 ",\"max_us\":%" PRIu64 ",\"latency_samples\":%" PRIu64
           ",\"groups_per_s\":%.0f,\"syncs_per_s\":%.0f,\"commits_per_group\":%.1f,"
           "\"group_interval_us\":%.0f,"
           "\"group_bytes\":%.0f,\"spool_reads\":%" PRIu64
           ",\"skip\":%s,\"skipped_commits\":%" PRIu64 ","
           "\"stage_cpu_ns_per_commit\":%.0f,\"producer_cpu_ns_per_commit\":%.0f,%s,"
           "\"target_commits_per_s\":%s,\"rate_met\":%s%s}\n",
           name, bsp_ring_bytes >> 20, size, producers, rate,
           rate > 0 ? (double)bsp_pace_ns / 1000 : 0, r.local_cps, r.local_mbps, r.w_cps, r.p50_us,
           r.p99_us, r.p999_us, r.max_us, r.samples, r.groups_per_s, r.syncs_per_s,
           r.commits_per_group, r.group_gap_us, gbytes, r.spool_reads, skipping ? "true" : "false",
           r.skipped, r.stage_ns, r.producer_ns, rj, size == 128 && rate == 0 ? "1000000" : "null",
           size == 128 && rate == 0 ? (r.local_cps >= 1e6 ? "true" : "false") : "null", pj);
    fflush(stdout);
    return r.local_cps;
}

/* (a): pg_test_fsync's overwrites at 8 and 64 KiB, appends at 8 KiB to 1 MiB. */
static void bsp_raw_all(double secs)
{
    size_t sizes[] = {8192, 65536, 262144, 1048576};
    for (int i = 0; i < 2; i++)
        bsp_raw("overwrite", sizes[i], secs / 2);
    for (int i = 0; i < 4; i++)
        bsp_raw("append", sizes[i], secs / 2);
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 3.0;
    const char *only = argc > 2 ? argv[2] : "";
    const char *base = getenv("S3C_BENCH_DIR");
    const char *pace = getenv("S3C_BENCH_PACE_US");
    bsp_no_skip = getenv("S3C_BENCH_NO_SKIP") && atoi(getenv("S3C_BENCH_NO_SKIP")) != 0;
    if (pace && atof(pace) >= 1)
        bsp_pace_ns = (uint64_t)(atof(pace) * 1000);
    char exe[PATH_MAX], where[PATH_MAX + 8], src[512], type[512];
    if (!base || !*base) { /* build/bin/bench-spool -> build */
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        exe[n > 0 ? n : 0] = 0;
        char *slash = strrchr(exe, '/');
        if (slash)
            *slash = 0;
        snprintf(where, sizeof(where), "%s/..", exe);
        base = where;
    }
    char real[PATH_MAX];
    if (!realpath(base, real))
        bsp_die("the bench directory does not exist");
    snprintf(bsp_root, sizeof(bsp_root), "%.990s/bench-spool-XXXXXX", real);
    if (!mkdtemp(bsp_root))
        bsp_die("cannot create the bench directory");
    bsp_mount_of(bsp_root, src, type, sizeof(src));
    printf("{\"bench\":\"spool\",\"case\":\"disk\",\"dir\":\"%s\",\"device\":\"%s\","
           "\"fs\":\"%s\",\"seconds_per_case\":%.1f}\n",
           bsp_root, src, type, secs);
    fflush(stdout);
    if (strcmp(type, "tmpfs") == 0 || strcmp(type, "ramfs") == 0) {
        rmdir(bsp_root);
        bsp_die("the directory is on a RAM filesystem: set S3C_BENCH_DIR to a real disk");
    }

    /* (a) The disk. */
    if (strcmp(only, "light") == 0) { /* light load alone, against the raw 8 KiB append */
        bsp_raw("overwrite", 8192, secs / 2);
        bsp_raw("append", 8192, secs / 2);
    }
    if (!*only || strcmp(only, "raw") == 0)
        bsp_raw_all(secs);

    const char *margs[] = {"--store", "none", NULL};
    if (mockproc_start(&bsp_mock, margs) != 0)
        return 1;

    /* (b) Locally durable commits at full speed, then at half of the 128 B, 2-producer peak. */
    double peak = 0;
    if (strcmp(only, "half") == 0) { /* the half-load case alone, for a profiler */
        double rate = argc > 3 ? atof(argv[3]) : 0;
        if (rate <= 0)
            rate = bsp_local("local_peak", 2, 128, secs, 0) / 2;
        bsp_local("local_half_load", 2, 128, secs, rate);
    }
    if (strcmp(only, "local4k") == 0)
        for (int p = 1; p <= 4; p *= 2)
            bsp_local("local_peak", p, 4096, secs, 0);
    if (!*only || strcmp(only, "local") == 0 || strcmp(only, "paced") == 0) {
        size_t sizes[] = {128, 4096};
        int prods[] = {1, 2, 4};
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 3; j++) {
                if (strcmp(only, "paced") == 0 && (i != 0 || prods[j] != 2))
                    continue;
                double c = bsp_local("local_peak", prods[j], sizes[i], secs, 0);
                peak = i == 0 && prods[j] == 2 ? c : peak;
            }
        bsp_local("local_half_load", 2, 128, secs, peak / 2);
    }
    if (!*only || strcmp(only, "local") == 0 || strcmp(only, "paced") == 0 ||
        strcmp(only, "light") == 0)
        bsp_local("local_light_load", 1, 128, secs, 10000);
    if (!*only || strcmp(only, "local") == 0 || strcmp(only, "paced") == 0) {
        /* At full speed the backlog is the ring: latency is ring bytes / disk rate. */
        bsp_ring_bytes = 4L << 20;
        bsp_local("local_peak", 2, 128, secs, 0);
        bsp_ring_bytes = 64L << 20;
    }

    /* (d) p99 against the load: where the target stops being met. */
    if (!*only || strcmp(only, "sweep") == 0) {
        static const double rates[] = {10000, 100000, 300000, 1000000, 2000000, 4000000};
        /* The frontier: the highest rate at which this and every lower rate met it. */
        double met_mean = 0, met_p99 = 0, met_probe = 0, met_paced = 0;
        bool still_mean = true, still_p99 = true, still_probe = true, any_probe = false;
        bool still_paced = true, any_paced = false;
        /* The ideal group commit on the probe's own writes: the spool against it, and the
         * rates at which even it missed two probe p99s (the disk's tail, not the spool's) */
        double met_ideal = 0;
        bool still_ideal = true, any_ideal = false;
        int ideal_missed = 0;
        char rates_run[256] = "";
        for (size_t i = 0; i < sizeof(rates) / sizeof(rates[0]); i++) {
            double got = bsp_local("local_rate", rates[i] < 100000 ? 1 : 2, 128, secs, rates[i]);
            if (got < 0.95 * rates[i])
                break; /* the disk or the CPU cannot take this rate: the sweep ends */
            size_t n = strlen(rates_run);
            snprintf(rates_run + n, sizeof(rates_run) - n, "%s%.0f", n ? "," : "", rates[i]);
            still_mean = still_mean && bsp_last_target > 0 && bsp_last_p99 <= bsp_last_target;
            still_p99 = still_p99 && bsp_last_loose > 0 && bsp_last_p99 <= bsp_last_loose;
            any_probe = any_probe || bsp_last_probe > 0;
            still_probe = still_probe && bsp_last_probe > 0 && bsp_last_p99 <= bsp_last_probe;
            met_mean = still_mean ? rates[i] : met_mean;
            met_p99 = still_p99 ? rates[i] : met_p99;
            met_probe = still_probe ? rates[i] : met_probe;
            any_paced = any_paced || bsp_last_paced > 0;
            still_paced = still_paced && bsp_last_paced > 0 && bsp_last_p99 <= bsp_last_paced;
            met_paced = still_paced ? rates[i] : met_paced;
            any_ideal = any_ideal || bsp_last_ideal > 0;
            still_ideal = still_ideal && bsp_last_ideal > 0 && bsp_last_p99 <= bsp_last_ideal;
            met_ideal = still_ideal ? rates[i] : met_ideal;
            ideal_missed += bsp_last_ideal > 0 && bsp_last_ideal > bsp_last_probe;
        }
        char fr[256], fp[64], fq[64], fi[128]; /* null: no raw lines before, or no probe */
        if (bsp_nraw > 0)
            snprintf(fr, sizeof(fr),
                     "\"highest_rate_p99_within_two_raw_means\":%.0f,"
                     "\"highest_rate_p99_within_two_raw_p99s\":%.0f",
                     met_mean, met_p99);
        else
            snprintf(fr, sizeof(fr),
                     "\"highest_rate_p99_within_two_raw_means\":null,"
                     "\"highest_rate_p99_within_two_raw_p99s\":null");
        snprintf(fp, sizeof(fp), any_probe ? "%.0f" : "null", met_probe);
        snprintf(fq, sizeof(fq), any_paced ? "%.0f" : "null", met_paced);
        if (any_ideal)
            snprintf(fi, sizeof(fi),
                     "\"highest_rate_p99_within_ideal_group_commit\":%.0f,"
                     "\"rates_ideal_over_two_probe_p99s\":%d",
                     met_ideal, ideal_missed);
        else
            snprintf(fi, sizeof(fi),
                     "\"highest_rate_p99_within_ideal_group_commit\":null,"
                     "\"rates_ideal_over_two_probe_p99s\":null");
        printf("{\"bench\":\"spool\",\"case\":\"p99_frontier\",\"commit_bytes\":128,"
               "\"rates\":[%s],%s,\"highest_rate_p99_within_two_probe_p99s\":%s,"
               "\"highest_rate_p99_within_two_paced_probe_p99s\":%s,%s}\n",
               rates_run, fr, fp, fq, fi);
        fflush(stdout);
        /* The raw lines after the sweep when it runs alone: written before it, their
         * gigabytes (1 MiB appends) were still being written back by the host for seconds
         * and tripled the first cases' p99 (docs/spool.md). */
        if (strcmp(only, "sweep") == 0)
            bsp_raw_all(secs);
    }

    /* (c) End to end: W with the spool off and on, in three alternating pairs so that a
     * neighbour's load falls on both sides; the verdict is on the sums. */
    bool side_on = strcmp(only, "e2e-on") == 0, side_off = strcmp(only, "e2e-off") == 0;
    if (!*only || strcmp(only, "e2e") == 0 || side_on || side_off) {
        char dir[PATH_MAX];
        double sum_off = 0, sum_on = 0;
        for (int pair = 1; pair <= 3; pair++) {
            struct bsp_run off = {0}, on = {0};
            if (!side_on)
                off = bsp_drive(NULL, 2, 128, secs, 0, NULL);
            if (!side_off) {
                bsp_spool_dir(dir, sizeof(dir));
                spool_test_no_skip = bsp_no_skip;
                on = bsp_drive(dir, 2, 128, secs, 0, NULL);
                spool_test_no_skip = false;
                bsp_rmdir(dir);
                bsp_cur[0] = 0;
            }
            sum_off += off.w_cps;
            sum_on += on.w_cps;
            printf("{\"bench\":\"spool\",\"case\":\"s3_throughput\",\"pair\":%d,"
                   "\"commit_bytes\":128,\"producers\":2,\"spool_off_commits_per_s\":%.0f,"
                   "\"spool_on_commits_per_s\":%.0f,\"spool_on_local_commits_per_s\":%.0f,"
                   "\"on_over_off\":%.3f,\"stage_cpu_ns_per_commit_off\":%.0f,"
                   "\"stage_cpu_ns_per_commit_on\":%.0f,\"producer_cpu_ns_per_commit_off\":%.0f,"
                   "\"producer_cpu_ns_per_commit_on\":%.0f,\"spool_reads_on\":%" PRIu64
                   ",\"skipped_commits_on\":%" PRIu64 ",\"spool_on_written_commits_per_s\":%.0f,"
                   "\"commits_per_object_off\":%.0f,\"commits_per_object_on\":%.0f}\n",
                   pair, off.w_cps, on.w_cps, on.local_cps,
                   off.w_cps > 0 ? on.w_cps / off.w_cps : 0, off.stage_ns, on.stage_ns,
                   off.producer_ns, on.producer_ns, on.spool_reads, on.skipped,
                   on.run_s > 0 ? on.local_cps - (double)on.skipped / on.run_s : 0,
                   off.commits_per_object, on.commits_per_object);
            fflush(stdout);
        }
        double ratio = sum_off > 0 ? sum_on / sum_off : 0;
        if (!side_on && !side_off)
            printf("{\"bench\":\"spool\",\"case\":\"s3_throughput_ratio\",\"commit_bytes\":128,"
                   "\"producers\":2,\"pairs\":3,\"on_over_off\":%.3f,\"target\":\">= 0.8\","
                   "\"met\":%s}\n",
                   ratio, ratio >= 0.8 ? "true" : "false");
        fflush(stdout);
    }
    mockproc_stop(&bsp_mock);
    bsp_rmdir(bsp_root);
    return 0;
}
