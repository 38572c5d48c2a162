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

/* A fresh directory under tmpdir for one case (its mock data, its spool, its config), and
 * the mock keeping its objects there; the config names the mock and the spool. */
struct sp_case {
    char dir[512], data[600], spool[600], cfg[600];
    struct mockproc m;
};

static void sp_case_init(struct sp_case *c, const char *name, uint64_t ring, uint64_t seg)
{
    snprintf(c->dir, sizeof(c->dir), "%s/%s", tmpdir, name);
    snprintf(c->data, sizeof(c->data), "%s/mock", c->dir);
    snprintf(c->spool, sizeof(c->spool), "%s/spool", c->dir);
    snprintf(c->cfg, sizeof(c->cfg), "%s/run.json", c->dir);
    ASSERT(mkdir(c->dir, 0700) == 0 && mkdir(c->data, 0700) == 0);
    sr_mock_start(&c->m, c->data);
    sr_config(c->cfg, c->m.endpoint, c->spool, ring, seg, "");
}

static void sp_case_end(struct sp_case *c)
{
    untrack_child(c->m.pid);
    mockproc_stop(&c->m);
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
        if (p->out < 0 && p->err < 0) {
            int code = proc_wait(p, 5000);
            TEST_FAIL_("the run exited %d before its first line; stderr: %s", code, p->e.p);
        }
        if (now_ms() > end)
            TEST_FAIL_("the run did not open within 10 s; stderr: %s", p->e.p ? p->e.p : "");
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
    sp_case_init(&c, "kill", 4u << 20, 1u << 20);

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
                sr_outage(&c.m, on = true);
            if (on && k->mode == 2 && t >= off_at)
                sr_outage(&c.m, on = false);
            sr_feed_pump(&f, &p, 2);
            sr_parse(&k->o, &p.o);
            ASSERT(p.in >= 0); /* alive and reading until the kill */
        }
        ASSERT_EQ(kill(p.pid, SIGKILL), 0);
        ASSERT_EQ(proc_wait(&p, 10000), 128 + SIGKILL);
        sr_parse(&k->o, &p.o);
        if (on)
            sr_outage(&c.m, false); /* the next run opens against a healthy store */
        k->fed = sr_feed_whole(&f);
        fprintf(stderr,
                "   run %d (%s): killed %" PRIu64 " ms after its first line; epoch %" PRIu64
                " control_seq %" PRIu64 ", fed %" PRIu32 ", local_seq %" PRIu64
                " durable_seq %" PRIu64 "\n",
                r,
                k->mode == 0   ? "healthy"
                : k->mode == 1 ? "outage at the kill"
                               : "outage before",
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
    sp_case_end(&c);
}

/* ---- 2: a 60-second outage under a steady feed ------------------------------------- */

#define OU_RATE 3.0        /* commits per ms: 3,000/s of 150..249 bytes */
#define OU_MS 60000        /* the outage */
#define OU_N 180000        /* commits: OU_RATE for OU_MS, then the feed stops */
#define OU_RING (4u << 20) /* a small ring, so that memory kept per commit would show */
/* RSS may grow past its value right after the open by the ring (its pages are touched as
 * commits pass through) and this much more: the objects formed during the outage and read
 * back from the spool (8 PUTs in flight of at most 256 KiB + 4 KiB each: 2.1 MiB, plus the
 * object being formed), libcurl's and the transport's buffers for those requests, and
 * malloc's per-thread arenas and the stacks first touched under load. 8 MiB is a fifth
 * of the ~40 MB the outage feeds and 46 bytes per commit: keeping a copy of the commits,
 * or 47 bytes of anything per commit, fails. (Measured: about 4.2 MiB over the open's RSS,
 * the ring's 4 MiB included.) */
#define OU_SLACK_KB (8u << 10)
#define OU_SAMPLE_MS 500

#if defined(__SANITIZE_ADDRESS__)
#define OU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define OU_ASAN 1
#endif
#endif

/* Under ASan a freed block waits in a quarantine (256 MiB by default) before its memory is
 * reused, so RSS would follow the allocations, not what is held. The run under test gets
 * a quarantine of OU_ASAN_Q_MB instead, added to the bound with 4 MiB for its allocator's
 * per-thread caches and the shadow of the ring (one byte in eight); use-after-free checks
 * stay on. (Measured: about 7.5 MiB over the open's RSS.) */
#ifdef OU_ASAN
#define OU_ASAN_Q_MB 8
#define OU_ASAN_KB ((OU_ASAN_Q_MB << 10) + (4u << 10) + OU_RING / 8 / 1024)
static void ou_asan_env(void)
{
    char opts[1024];
    const char *cur = getenv("ASAN_OPTIONS");
    snprintf(opts, sizeof(opts), "%s%squarantine_size_mb=%d", cur ? cur : "",
             cur && cur[0] ? ":" : "", OU_ASAN_Q_MB);
    setenv("ASAN_OPTIONS", opts, 1);
}
#else
#define OU_ASAN_KB 0u
static void ou_asan_env(void)
{
}
#endif

struct ou_sample {
    uint64_t t, rss_kb, spool_bytes, l, w;
};

static void test_outage_60s(void)
{
    static struct ou_sample smp[(OU_MS + 30000) / OU_SAMPLE_MS + 300];
    size_t ns = 0, n_outage = 0;
    struct sp_case c;
    sp_case_init(&c, "outage", OU_RING, 8u << 20);
    struct sr_feed f;
    sr_feed_init(&f, 0, OU_N, OU_RATE);
    struct sr_out o = {0};
    struct proc p;
    ou_asan_env();
    sp_start_run(&p, c.cfg);
    sp_wait_open(&p, &o, NULL);
    uint64_t base_kb = sr_rss_kb(p.pid), last = o.first_seq + OU_N - 1;
    sr_outage(&c.m, true);
    sr_feed_go(&f);

    /* phase 0: the outage while the feed runs, and until every commit is locally durable;
     * phase 1: S3 answers again, until every commit is durable in S3 */
    for (int phase = 0; phase < 2; phase++) {
        uint64_t t0 = now_ms(), next = t0;
        for (;;) {
            uint64_t t = now_ms() - t0;
            if (phase == 0 && t >= OU_MS && sr_feed_whole(&f) == OU_N && o.max_local == last)
                break;
            if (phase == 1 && o.max_durable == last)
                break;
            if (t > (phase == 0 ? OU_MS + 15000u : 60000u))
                TEST_FAIL_("phase %d: not done after %" PRIu64 " ms: fed %" PRIu32 " L %" PRIu64
                           " W %" PRIu64 " of %" PRIu64 "; stderr: %s",
                           phase, t, sr_feed_whole(&f), o.max_local, o.max_durable, last, p.e.p);
            sr_feed_pump(&f, &p, 5);
            sr_parse(&o, &p.o);
            ASSERT(p.in >= 0 && p.out >= 0); /* no failure: alive and reading */
            if (now_ms() >= next) {
                next += OU_SAMPLE_MS;
                ASSERT(ns < sizeof(smp) / sizeof(smp[0]));
                smp[ns++] = (struct ou_sample){now_ms() - f.t0, sr_rss_kb(p.pid),
                                               sr_dir_bytes(c.spool), o.max_local, o.max_durable};
            }
        }
        if (phase == 0) {
            n_outage = ns;
            sr_outage(&c.m, false);
        }
    }
    uint64_t max_kb = 0;
    for (size_t i = 0; i < ns; i++)
        max_kb = smp[i].rss_kb > max_kb ? smp[i].rss_kb : max_kb;
    fprintf(stderr,
            "   %zu samples: RSS %" PRIu64 " KiB after the open, at most %" PRIu64
            " KiB (bound %" PRIu64 "); spool %" PRIu64 " bytes at the end of the outage; "
            "drained %" PRIu64 " ms after it\n",
            ns, base_kb, max_kb, base_kb + OU_RING / 1024 + OU_SLACK_KB + OU_ASAN_KB,
            smp[n_outage - 1].spool_bytes, smp[ns - 1].t - smp[n_outage - 1].t);
    ASSERT(max_kb <= base_kb + OU_RING / 1024 + OU_SLACK_KB + OU_ASAN_KB);
    /* During the outage W stood at the control record, L kept moving (every 5 s of the
     * feed), and the spool only grew, to at least the commits' bytes. */
    for (size_t i = 0; i < n_outage; i++) {
        ASSERT(smp[i].w <= o.control_seq);
        if (i > 0)
            ASSERT(smp[i].spool_bytes >= smp[i - 1].spool_bytes);
        if (i >= 10 && smp[i].t <= OU_MS)
            ASSERT(smp[i].l > smp[i - 10].l);
    }
    ASSERT(smp[n_outage - 1].spool_bytes >= (uint64_t)OU_N * 150);
    const char *deg = strstr(p.e.p, "event=stage_degraded");
    ASSERT(deg != NULL && strstr(deg + 1, "event=stage_degraded") == NULL); /* once */
    ASSERT(strstr(deg, "event=stage_recovered") != NULL);
    proc_close_stdin(&p);
    ASSERT_EQ(proc_wait(&p, 30000), 0);
    sr_parse(&o, &p.o);

    /* Every commit in S3, in order, with its bytes, after the one control record. */
    sr_check_run0(bin_s3commit, c.cfg, o.first_seq, OU_N, last);
    sr_feed_free(&f);
    proc_free(&p);
    sp_case_end(&c);
}

/* ---- 3: two runs on one spool directory --------------------------------------------- */

#define TR_N 3000

static void test_two_runs_one_spool(void)
{
    struct sp_case c;
    sp_case_init(&c, "two", 4u << 20, 1u << 20);
    struct sr_feed f;
    sr_feed_init(&f, 0, TR_N, 2.0);
    struct sr_out o = {0};
    struct proc a, b;
    sp_start_run(&a, c.cfg);
    sp_wait_open(&a, &o, NULL);
    sr_feed_go(&f);
    /* The second starts while the first takes commits; both are pumped in one loop. */
    bool b_started = false, b_done = false;
    uint64_t b_t0 = 0;
    int b_code = -1;
    while (sr_feed_whole(&f) < TR_N || !b_done) {
        ASSERT(now_ms() - f.t0 < 20000);
        sr_feed_pump(&f, &a, 5);
        sr_parse(&o, &a.o);
        ASSERT(a.in >= 0);
        if (!b_started && now_ms() - f.t0 >= 300) {
            sp_start_run(&b, c.cfg);
            b_t0 = now_ms();
            b_started = true;
        }
        if (b_started && !b_done) {
            proc_pump(&b, NULL, 0, 1);
            if (b.out < 0 && b.err < 0) {
                proc_close_stdin(&b);
                b_code = proc_wait(&b, 5000);
                b_done = true;
                b_t0 = now_ms() - b_t0; /* how long it took */
            }
        }
    }
    char pid[32];
    snprintf(pid, sizeof(pid), "(pid %d)", (int)a.pid);
    fprintf(stderr, "   the second run exited %d after %" PRIu64 " ms: %s", b_code, b_t0, b.e.p);
    ASSERT(b_code != 0);
    ASSERT(strstr(b.e.p, "in use by another process") != NULL && strstr(b.e.p, pid) != NULL);
    ASSERT(b.o.len == 0); /* it never opened the stage */
    proc_free(&b);

    /* The first: every commit durable, and a clean exit. */
    uint64_t a_t0 = now_ms();
    proc_close_stdin(&a);
    ASSERT_EQ(proc_wait(&a, 30000), 0);
    fprintf(stderr, "   the first drained and exited in %" PRIu64 " ms\n", now_ms() - a_t0);
    sr_parse(&o, &a.o);
    ASSERT_UEQ(o.max_durable, o.first_seq + TR_N - 1);
    ASSERT_UEQ(o.max_local, o.first_seq + TR_N - 1);
    proc_free(&a);

    /* The lock went with the first: a third run opens the spool. */
    struct sr_out o3;
    struct proc p3;
    ASSERT_EQ(sr_run_drain(bin_s3commit, c.cfg, &p3, &o3, 30000), 0);
    ASSERT_UEQ(o3.epoch, o.epoch + 1);
    proc_free(&p3);

    sr_check_run0(bin_s3commit, c.cfg, o.first_seq, TR_N, o3.control_seq);
    sr_feed_free(&f);
    sp_case_end(&c);
}

/* ---- 4: a torn tail ----------------------------------------------------------------- */

#define TT_N 4000
#define TT_CUT 100 /* bytes cut off the end of the last segment */

/* The commits the spool's segments hold in whole CHUNK frames below byte `end` of the
 * segment named last_seg (all of the others): the highest seq. Every segment must be
 * whole frames to its end, its END frame, or where the zeros of a prepared segment begin (kill -9
 * leaves no torn write behind a finished fdatasync); *data_end is where last_seg's end. */
static uint64_t tt_last_kept(const char *dir, uint64_t last_seg, uint64_t end, int *torn_type,
                             uint64_t *data_end)
{
    static const unsigned char zero[8];
    DIR *d = opendir(dir);
    ASSERT(d != NULL);
    struct dirent *e;
    uint64_t kept = 0;
    char path[1024];
    while ((e = readdir(d)) != NULL) {
        uint64_t seg;
        if (strlen(e->d_name) != 24 || sscanf(e->d_name, "%20" SCNu64 ".seg", &seg) != 1)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        FILE *fp = fopen(path, "rb");
        ASSERT(fp != NULL);
        struct stat st;
        ASSERT(fstat(fileno(fp), &st) == 0);
        uint64_t off = 0, size = (uint64_t)st.st_size;
        unsigned char h[SPOOL_FRAME_HEADER];
        while (off < size) {
            struct spool_frame fr;
            uint32_t crc;
            ASSERT(fseek(fp, (long)off, SEEK_SET) == 0);
            ASSERT(fread(h, 1, sizeof(h), fp) == sizeof(h));
            if (memcmp(h, zero, sizeof(zero)) == 0)
                break; /* a prepared segment's unwritten rest */
            ASSERT_EQ(spool_frame_decode(h, &fr, &crc), 0);
            uint64_t next = off + SPOOL_FRAME_HEADER + (((uint64_t)fr.len + 7) & ~7ull);
            ASSERT(next <= size);
            if (seg == last_seg && next > end) {
                *torn_type = (int)fr.type;
                break;
            }
            if ((fr.type == SPOOL_CHUNK || fr.type == SPOOL_SKIP) && fr.last > kept)
                kept = fr.last;
            off = next;
            if (fr.type == SPOOL_END)
                break; /* a closed segment: what follows is not frames */
        }
        if (seg == last_seg)
            *data_end = off;
        fclose(fp);
    }
    closedir(d);
    return kept;
}

static void test_torn_tail(void)
{
    struct sp_case c;
    sp_case_init(&c, "torn", 4u << 20, 1u << 20);
    struct sr_feed f;
    sr_feed_init(&f, 0, TT_N, 4.0);
    struct sr_out o = {0};
    struct proc p;
    sp_start_run(&p, c.cfg);
    sp_wait_open(&p, &o, NULL);
    sr_outage(&c.m, true);
    sr_feed_go(&f);
    uint64_t last = o.first_seq + TT_N - 1;
    while (o.max_local < last) { /* all of it in the spool, none of it in S3 */
        ASSERT(now_ms() - f.t0 < 20000);
        sr_feed_pump(&f, &p, 5);
        sr_parse(&o, &p.o);
        ASSERT(p.in >= 0);
    }
    ASSERT(o.max_durable <= o.control_seq);
    ASSERT_EQ(kill(p.pid, SIGKILL), 0);
    ASSERT_EQ(proc_wait(&p, 10000), 128 + SIGKILL);
    proc_free(&p);
    sr_outage(&c.m, false);

    /* Cut the last segment TT_CUT bytes short: inside its last frame or the one before. */
    DIR *d = opendir(c.spool);
    ASSERT(d != NULL);
    struct dirent *e;
    uint64_t last_seg = 0;
    int nseg = 0;
    while ((e = readdir(d)) != NULL) {
        uint64_t seg;
        if (strlen(e->d_name) == 24 && sscanf(e->d_name, "%20" SCNu64 ".seg", &seg) == 1)
            last_seg = seg > last_seg ? seg : last_seg, nseg++;
    }
    closedir(d);
    char path[1024];
    snprintf(path, sizeof(path), "%s/%020" PRIu64 ".seg", c.spool, last_seg);
    int torn = 0;
    uint64_t data_end = 0, de2;
    uint64_t kept = tt_last_kept(c.spool, last_seg, UINT64_MAX, &torn, &data_end);
    ASSERT_UEQ(kept, last); /* whole before the cut */
    ASSERT(data_end > TT_CUT);
    uint64_t end = data_end - TT_CUT; /* and the zeros after it, if prepared */
    kept = tt_last_kept(c.spool, last_seg, end, &torn, &de2);
    ASSERT(truncate(path, (off_t)end) == 0);
    fprintf(stderr,
            "   %d segments; %s cut to %" PRIu64 " bytes, inside a frame of type %d: commits up "
            "to seq %" PRIu64 " of %" PRIu64 " are whole\n",
            nseg, path, end, torn, kept, last);
    ASSERT(kept >= o.first_seq && kept < last);

    /* The restart cuts the tail, says so, and sends what is before it. */
    struct sr_out o2;
    ASSERT_EQ(sr_run_drain(bin_s3commit, c.cfg, &p, &o2, 60000), 0);
    ASSERT(strstr(p.e.p, "event=spool_tail_cut") != NULL);
    ASSERT(strstr(p.e.p, "cut=1") != NULL);
    ASSERT_UEQ(o2.control_seq, kept + 1); /* nothing after the cut is given a place */
    proc_free(&p);

    sr_check_run0(bin_s3commit, c.cfg, o.first_seq, kept - o.first_seq + 1, o2.control_seq);
    sr_feed_free(&f);
    sp_case_end(&c);
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
    CASE(test_outage_60s);
    CASE(test_two_runs_one_spool);
    CASE(test_torn_tail);
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return 0;
}
