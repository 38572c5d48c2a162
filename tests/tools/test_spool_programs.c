/* The local spool as `s3commit run` uses it, with real processes: s3commit-mock keeping
 * objects on disk, runs killed with SIGKILL, an S3 outage made by the mock answering 503 on
 * the data keys, a second process on the same spool, and a torn segment tail. Every case
 * reads the log back with `s3commit cat` and checks it with `s3commit verify`. One case by
 * name: test_spool_programs <case>. Every process started here is stopped by pid. */
#include <dirent.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "spool/spool_int.h"
#include "spoolrun.h"
#include "test.h"

static char tmpdir[256];
static char bin_s3commit[512];

static uint64_t sp_rng;

static uint64_t sp_rand(void) /* splitmix64 */
{
    uint64_t z = (sp_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* A fresh directory under tmpdir for one case: its mock data, its spool, its config. */
struct sp_case {
    char dir[512], data[600], spool[600], cfg[600];
};

static void sp_case_init(struct sp_case *c, const char *name)
{
    snprintf(c->dir, sizeof(c->dir), "%s/%s", tmpdir, name);
    snprintf(c->data, sizeof(c->data), "%s/mock", c->dir);
    snprintf(c->spool, sizeof(c->spool), "%s/spool", c->dir);
    snprintf(c->cfg, sizeof(c->cfg), "%s/run.json", c->dir);
    ASSERT(mkdir(c->dir, 0700) == 0 && mkdir(c->data, 0700) == 0);
}

static void sp_start_run(struct proc *p, const char *cfg)
{
    proc_start(p, (const char *[]){bin_s3commit, "run", "--config", cfg, NULL});
}

/* Pumps the run's output (and its feed, if any) until its first line; fails after 10 s. */
static void sp_wait_open(struct proc *p, struct sr_out *o, struct sr_feed *f)
{
    uint64_t end = now_ms() + 10000;
    while (!o->header) {
        if (now_ms() > end || (p->out < 0 && p->err < 0))
            TEST_FAIL_("the run did not open (within 10 s); stderr: %s", p->e.p ? p->e.p : "");
        if (f)
            sr_feed_pump(f, p, 5);
        else
            proc_pump(p, NULL, 0, 5);
        sr_parse(o, &p->o);
    }
}

/* ---- 1: kill -9 at ten random moments, some with a backlog in the spool ------------- */

#define KS_RUNS 10
#define KS_MAX 6000      /* commits per run: more than the feed reaches before the kill */
#define KS_RATE 4.0      /* commits per ms once a run is open */
#define KS_KILL_MIN 150  /* kill this long after the first line, at the earliest */
#define KS_KILL_SPAN 600 /* ... and at the latest KS_KILL_MIN + KS_KILL_SPAN - 1 */

struct ks_run {
    struct sr_out o;
    uint32_t fed;
    int mode; /* 0: S3 healthy; 1: an outage still on at the kill; 2: one that ended before */
};

static void test_kill_with_spool(void)
{
    static struct ks_run runs[KS_RUNS + 1];
    static uint8_t seen[KS_RUNS][KS_MAX];
    const char *env = getenv("S3C_KILL_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL) ^ (uint64_t)getpid();
    sp_rng = seed;
    fprintf(stderr, "   seed %" PRIu64 " (S3C_KILL_SEED=%" PRIu64 " replays these kills)\n", seed,
            seed);
    struct sp_case c;
    sp_case_init(&c, "kill");
    struct mockproc m;
    sr_mock_start(&m, c.data);
    sr_config(c.cfg, m.endpoint, c.spool, 4u << 20, 1u << 20);

    for (int r = 0; r < KS_RUNS; r++) {
        struct ks_run *k = &runs[r];
        k->mode = r % 3;
        uint64_t kill_after = KS_KILL_MIN + sp_rand() % KS_KILL_SPAN;
        /* mode 1: 503 from early on to past the kill (long enough for the retries to give
         * up: the stage is degraded and the spool holds what W has not passed); mode 2: a
         * short outage that ends 100 ms before the kill */
        uint64_t on_at = 10 + sp_rand() % 40, off_at = k->mode == 2 ? kill_after - 100 : 0;
        if (k->mode == 1 && kill_after < on_at + 350)
            kill_after = on_at + 350;
        struct sr_feed f;
        struct proc p;
        sr_feed_init(&f, r, KS_MAX, KS_RATE);
        sp_start_run(&p, c.cfg);
        sp_wait_open(&p, &k->o, NULL);
        sr_feed_go(&f);
        bool on = false;
        while (now_ms() - f.t0 < kill_after) {
            uint64_t t = now_ms() - f.t0;
            if (k->mode && !on && t >= on_at && (k->mode == 1 || t < off_at))
                sr_outage(&m, on = true);
            if (on && k->mode == 2 && t >= off_at)
                sr_outage(&m, on = false);
            sr_feed_pump(&f, &p, 2);
            sr_parse(&k->o, &p.o);
            ASSERT(p.in >= 0); /* alive and reading until the kill */
        }
        ASSERT_EQ(kill(p.pid, SIGKILL), 0);
        ASSERT_EQ(proc_wait(&p, 10000), 128 + SIGKILL);
        sr_parse(&k->o, &p.o);
        if (on)
            sr_outage(&m, false); /* the next run opens against a healthy store */
        k->fed = sr_feed_whole(&f);
        fprintf(stderr,
                "   run %d (%s): killed %" PRIu64 " ms after its first line; epoch %" PRIu64
                " control_seq %" PRIu64 ", fed %" PRIu32 ", local_seq %" PRIu64
                " durable_seq %" PRIu64 "\n",
                r, k->mode == 0 ? "healthy" : k->mode == 1 ? "outage at the kill" : "outage before",
                kill_after, k->o.epoch, k->o.control_seq, k->fed, k->o.max_local, k->o.max_durable);
        /* the watermarks cover only seqs given out so far: the commits fed */
        ASSERT(k->o.max_local < k->o.first_seq + k->fed);
        ASSERT(k->o.max_durable < k->o.first_seq + k->fed);
        ASSERT(k->o.nlocal > 0);
        if (k->mode == 1) /* a backlog: locally durable, not in S3 */
            ASSERT(k->o.max_local > k->o.max_durable);
        /* this run's open put its control record after all that earlier runs called durable
         * in either sense, and replayed a backlog the run before left */
        for (int q = 0; q < r; q++) {
            ASSERT(k->o.epoch > runs[q].o.epoch);
            ASSERT(k->o.control_seq > runs[q].o.max_local);
            ASSERT(k->o.control_seq > runs[q].o.max_durable);
        }
        if (r > 0 && runs[r - 1].mode == 1 && !strstr(p.e.p, "event=spool_replay"))
            TEST_FAIL_("run %d did not replay the backlog run %d left: %s", r, r - 1, p.e.p);
        sr_feed_free(&f);
        proc_free(&p);
    }

    /* A last run with nothing to add sends what the spool still holds and stops. */
    struct proc p;
    ASSERT_EQ(sr_run_drain(bin_s3commit, c.cfg, &p, &runs[KS_RUNS].o, 60000), 0);
    for (int q = 0; q < KS_RUNS; q++)
        ASSERT(runs[KS_RUNS].o.control_seq > runs[q].o.max_local);
    proc_free(&p);

    /* Every commit on the chain is one a run sent, at the seq that run gave it, once. */
    struct sr_rec *recs;
    uint64_t last;
    size_t n = sr_read_back(bin_s3commit, c.cfg, &recs, &last);
    for (size_t i = 0; i < n; i++) {
        struct sr_rec *e = &recs[i];
        if (e->run >= KS_RUNS || e->index >= KS_MAX)
            TEST_FAIL_("seq %" PRIu64 ": run %d commit %" PRIu32 " was never sent", e->seq, e->run,
                       e->index);
        if (e->seq != runs[e->run].o.first_seq + e->index)
            TEST_FAIL_("seq %" PRIu64 " holds run %d commit %" PRIu32 ", given seq %" PRIu64,
                       e->seq, e->run, e->index, runs[e->run].o.first_seq + e->index);
        if (seen[e->run][e->index]++)
            TEST_FAIL_("run %d commit %" PRIu32 " is on the chain twice", e->run, e->index);
    }
    /* ... and every seq a run printed locally durable (or durable) is there. */
    uint64_t held = 0;
    for (int r = 0; r < KS_RUNS; r++) {
        struct sr_out *o = &runs[r].o;
        uint64_t top = o->max_local > o->max_durable ? o->max_local : o->max_durable;
        for (uint64_t s = o->first_seq; s <= top; s++, held++)
            if (!seen[r][s - o->first_seq])
                TEST_FAIL_("run %d printed local_seq %" PRIu64 " but its seq %" PRIu64
                           " (commit %" PRIu64 ") is not on the chain",
                           r, o->max_local, s, s - o->first_seq);
    }
    fprintf(stderr, "   %" PRIu64 " locally durable commits all on the chain, in order\n", held);
    ASSERT_UEQ(last, runs[KS_RUNS].o.control_seq);
    sr_verify(bin_s3commit, c.cfg, n, last);
    free(recs);
    untrack_child(m.pid);
    mockproc_stop(&m);
}

int main(int argc, char **argv)
{
    const char *bindir = getenv("S3C_BIN_DIR");
    if (!bindir) {
        fprintf(stderr, "S3C_BIN_DIR is not set (run through ctest)\n");
        return 1;
    }
    snprintf(bin_s3commit, sizeof(bin_s3commit), "%s/s3commit", bindir);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/s3c-test-spool-XXXXXX");
    ASSERT(mkdtemp(tmpdir) != NULL);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGABRT, on_abort);
    const char *only = argc > 1 ? argv[1] : NULL;
#define CASE(fn)                                                                                   \
    if (!only || strcmp(only, #fn) == 0)                                                           \
    RUN(fn)
    CASE(test_kill_with_spool);
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return 0;
}
