/* Allocation-failure tests, SQLite's way: for N = 1, 2, ... the Nth allocation fails
 * (one-shot, then persistent: the Nth and every later one) during s3c_config_parse,
 * s3c_config_dump, s3c_stage_open and s3c_stage_close (and in a running stage), until a
 * call runs with no failure injected. A failed call must return an error (S3C_ENOMEM when memory
 * ran out, NULL for the dump) with a message, free every block it took, close every descriptor and
 * leave no thread running. A call that absorbed a failure must still work (an open's
 * stage makes a commit durable). A close must free everything and return, and one
 * failed allocation during its last PUT must cost a retry, not the commit.
 *
 * What is counted (alloc_fail.c): every malloc/calloc/realloc/strdup/aligned_alloc of our
 * code (wrapped at link time: the test links the static library), cJSON's allocations
 * (cJSON_InitHooks), libcurl's (curl_global_init_mem, installed before the library's
 * one curl_global_init) and OpenSSL's (CRYPTO_set_mem_functions, first thing in main).
 * The dependencies are counted too because most of what open allocates is theirs (curl
 * handles, the multi handle, digest contexts), and our error paths are what must cope
 * when they fail. glibc's own allocations (getaddrinfo, opendir, thread stacks) are not.
 * A second loop fails open's calls to pthread_create, epoll_create1, epoll_ctl (never a
 * DEL), eventfd, timerfd_create and socket the same way: running out of threads or
 * descriptors must be as clean as running out of memory.
 *
 * What a process sets up once (OpenSSL's providers and the signer's algorithms and
 * thread key) is tested first, each N in a fork that has not opened a stage yet: after
 * its failed first open the process must open a working stage, or, where OpenSSL 3.0
 * itself stays broken (it does not retry its own once-only set-up), refuse to open and
 * say so. Then one clean open, unarmed, sets all of it up for the loops that follow.
 * curl_global_init is not failed: the test's curl_global_init_mem performs it. Open is
 * counted on the calling thread only (a fresh thread per iteration, so per-thread first-use
 * allocations are counted too) and the threads open starts are not; close counts every
 * thread, the persistence thread's last PUT included. Leaks are checked per iteration by
 * live block counts per allocator, and under ASan by LeakSanitizer as well.
 *
 * AF_VERBOSE=1 prints each failed call's error; AF_TRACE=1 a backtrace of each injected
 * failure. */
#include <dirent.h>
#include <execinfo.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "alloc_fail.h"
#include "mockproc.h"
#include "s3commit.h"
#include "test.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define AF_LSAN 1
#endif

#define AK "AKIDALLOCFAILTEST001"
#define SK "alloc-fail-test-secret-key-0123456789ab"
#define MAX_N 200000

static struct mockproc mock;
static char cfg_json[2048];
static s3c_config *stage_cfg; /* cfg_json, parsed, with a prefix of its own */

/* Opens read the log, so each run gets an empty one: a new key prefix. Unarmed. */
/* More members of "s3" for the stages opened ("" or starting with a comma). With direct
 * PUTs (s3.direct_put, the default) the pool's warm connections are direct.c's, so the
 * writer's manifest GET at open opens a fresh libcurl connection, and a failed allocation
 * in libcurl's per-socket transfer hash while that connect is under way reaches libcurl's
 * own bug ("a running stage" below: SIGFPE on its next call; seen at 2 of the ~3,000
 * points of a first open, and now and then in the open loop). So the loops that fail
 * libcurl's allocations open with libcurl's PUTs (",\"direct_put\":false", as before
 * direct PUTs became the default: libcurl's GET then reuses a warm connection), and the
 * default is opened with ours, cJSON's and OpenSSL's failing. */
static const char *stage_s3_extra = "";

static void fresh_stage_cfg(void)
{
    const char *s3_extra = stage_s3_extra;
    static long k;
    char json[sizeof(cfg_json) + 64], err[512];
    const char *p = strstr(cfg_json, "\"prefix\":\"af/\"");
    ASSERT(p);
    snprintf(json, sizeof(json), "%.*s\"prefix\":\"af/%ld/\"%s%s", (int)(p - cfg_json), cfg_json,
             ++k, s3_extra, p + strlen("\"prefix\":\"af/\""));
    s3c_config_free(stage_cfg);
    stage_cfg = NULL;
    if (s3c_config_parse(json, strlen(json), &stage_cfg, err, sizeof(err)) != 0)
        TEST_FAIL_("config: %s", err);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int count_dir(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *e;
    int n = 0;
    ASSERT(d);
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static int ntasks(void)
{
    return count_dir("/proc/self/task");
}

static int nfds(void)
{
    return count_dir("/proc/self/fd");
}

/* The live block counts, the threads and the descriptors are back where they were.
 * Threads are given a moment: a joined thread's task entry can linger briefly (and one
 * counted before may have gone since). */
static void check_nothing_left(const struct allocfail_live *before, int tasks_before,
                               int fds_before, const char *what, long n, bool persistent)
{
    struct allocfail_live now = allocfail_live_now();
    int tasks = ntasks(), fds = nfds();
    for (int i = 0; i < 100 && tasks > tasks_before; i++) {
        sleep_ms(1);
        tasks = ntasks();
    }
    for (int f = 0; f < AF_NFAMILIES; f++)
        if (now.n[f] != before->n[f])
            TEST_FAIL_("%s, allocation %ld failed (%s): %ld %s block(s) left behind", what, n,
                       persistent ? "persistent" : "one-shot", now.n[f] - before->n[f],
                       allocfail_family_name((enum allocfail_family)f));
    if (tasks > tasks_before)
        TEST_FAIL_("%s, allocation %ld failed (%s): %d thread(s) left running", what, n,
                   persistent ? "persistent" : "one-shot", tasks - tasks_before);
    if (fds != fds_before)
        TEST_FAIL_("%s, allocation %ld failed (%s): %d descriptor(s) left open", what, n,
                   persistent ? "persistent" : "one-shot", fds - fds_before);
#ifdef AF_LSAN
    if ((n & 15) == 0 && __lsan_do_recoverable_leak_check())
        TEST_FAIL_("%s, allocation %ld failed: LeakSanitizer found a leak", what, n);
#endif
}

/* ---- one call per fresh thread ------------------------------------------------------- */

struct job {
    long nth;
    bool persistent;
    unsigned kinds;              /* AF_KIND_*: allocations, OS calls */
    int (*call)(struct job *j);  /* the armed call: 0 or a negative S3C_E* */
    void (*undo)(struct job *j); /* after a successful call, unarmed */
    int rc;
    long seen, hits, by[AF_NFAMILIES];
    unsigned hit_kinds; /* where the failures landed */
    bool lost;          /* close: the commit was not made durable */
    char err[512];
    s3c_config *cfg;
    s3c_stage *st;
    char *dump;
};

static void *job_main(void *arg)
{
    struct job *j = arg;
    allocfail_arm(j->nth, j->persistent, false, j->kinds);
    j->rc = j->call(j);
    j->seen = allocfail_disarm();
    j->hits = allocfail_hits();
    j->hit_kinds = allocfail_hit_kinds();
    for (int f = 0; f < AF_NFAMILIES; f++)
        j->by[f] = allocfail_seen((enum allocfail_family)f);
    if (j->rc == 0 && j->undo)
        j->undo(j);
    return NULL;
}

/* Runs call with the Nth allocation failing for N = 1, 2, ... until it runs with no
 * failure injected. Returns how many allocations the clean run counted. */
static long fail_each_every(const char *what, int (*call)(struct job *), void (*undo)(struct job *),
                            bool persistent, unsigned kinds, long stride)
{
    long lost = 0, from = getenv("AF_FROM") ? atol(getenv("AF_FROM")) : 1;
    for (long n = from; n < MAX_N; n += stride) {
        struct job j = {
            .nth = n, .persistent = persistent, .kinds = kinds, .call = call, .undo = undo};
        fresh_stage_cfg();
        struct allocfail_live before = allocfail_live_now();
        int tasks = ntasks(), fds = nfds();
        pthread_t t;
        ASSERT_EQ(pthread_create(&t, NULL, job_main, &j), 0);
        ASSERT_EQ(pthread_join(t, NULL), 0);
        if (j.hits == 0 && j.rc != 0)
            TEST_FAIL_("%s failed with nothing failing: %d (%s)", what, j.rc, j.err);
        if (j.rc > 0)
            TEST_FAIL_("%s returned %d, not 0 or a negative S3C_E*", what, j.rc);
        if (j.rc < 0 && !j.err[0])
            TEST_FAIL_("%s, allocation %ld failed: returned %d with no message", what, n, j.rc);
        /* Out of memory must say so: S3C_EINVAL or S3C_ECONFIG would send the operator
         * to fix a config that is fine. Checked one-shot (persistent failures surface as
         * whatever fails first: a transfer, a retry). Not when the failure was libcurl's: it
         * reports its own in several ways, and 7.88 can even send a request without its
         * query string (a 403 SignatureDoesNotMatch follows). */
        if (j.rc < 0 && j.hits && kinds == AF_KIND_ALLOC && !persistent &&
            !(j.hit_kinds & AF_KIND(AF_CURL)) && j.rc != S3C_ENOMEM)
            TEST_FAIL_("%s, allocation %ld failed: returned %d (%s), not S3C_ENOMEM", what, n, j.rc,
                       j.err);
        if (j.rc < 0 && getenv("AF_VERBOSE"))
            fprintf(stderr, "   %s, %ld failed: %d %s\n", what, n, j.rc, j.err);
        check_nothing_left(&before, tasks, fds, what, n, persistent);
        lost += j.lost;
        if (j.hits == 0) {
            fprintf(stderr,
                    "   %s: %ld %s (ours %ld, cJSON %ld, libcurl %ld, OpenSSL %ld, OS %ld), "
                    "%s failed in turn (%s)",
                    what, j.seen, kinds == AF_KIND_SYS ? "OS calls" : "allocations", j.by[AF_OURS],
                    j.by[AF_CJSON], j.by[AF_CURL], j.by[AF_OPENSSL], j.by[AF_SYS],
                    stride == 1 ? "each" : "a sample", persistent ? "persistent" : "one-shot");
            if (lost)
                fprintf(stderr, "; the commit was lost in %ld of %ld runs", lost,
                        (n - from) / stride);
            fprintf(stderr, "\n");
            return j.seen;
        }
    }
    TEST_FAIL_("%s still hit an injected failure at allocation %d", what, MAX_N);
}

static long fail_each(const char *what, int (*call)(struct job *), void (*undo)(struct job *),
                      bool persistent, unsigned kinds)
{
    return fail_each_every(what, call, undo, persistent, kinds, 1);
}

/* ---- the calls ----------------------------------------------------------------------- */

static int call_parse(struct job *j)
{
    int rc = s3c_config_parse(cfg_json, strlen(cfg_json), &j->cfg, j->err, sizeof(j->err));
    if (rc != 0 && j->cfg)
        TEST_FAIL_("s3c_config_parse returned %d and a config", rc);
    return rc;
}

static void undo_parse(struct job *j)
{
    s3c_config_free(j->cfg);
}

static s3c_config *parse_or_die(void)
{
    char err[512];
    s3c_config *cfg = NULL;
    if (s3c_config_parse(cfg_json, strlen(cfg_json), &cfg, err, sizeof(err)) != 0)
        TEST_FAIL_("config: %s", err);
    return cfg;
}

static int call_dump(struct job *j)
{
    j->dump = s3c_config_dump(j->cfg);
    if (!j->dump)
        snprintf(j->err, sizeof(j->err), "NULL");
    return j->dump ? 0 : S3C_ENOMEM;
}

static void undo_dump(struct job *j)
{
    ASSERT(strstr(j->dump, "\"commits\""));
    free(j->dump);
}

static int call_open(struct job *j)
{
    int rc = s3c_stage_open(j->cfg, &j->st, j->err, sizeof(j->err));
    if (rc != 0 && j->st)
        TEST_FAIL_("s3c_stage_open returned %d and a stage", rc);
    return rc;
}

/* An open that succeeded, whatever failed on the way (a warm-up connection not started,
 * say), gives a stage that works: a commit is made durable. Then closes it. */
static void check_works_and_close(s3c_stage *st, long n)
{
    uint64_t seq = 0;
    ASSERT_GT(s3c_metrics_port(st), 0);
    ASSERT_EQ(s3c_submit(st, "commit", 6, 1000, &seq), 0);
    if (s3c_wait_durable(st, seq, 10000) != 0) {
        struct s3c_stats s;
        s3c_stats_get(st, &s);
        TEST_FAIL_("open succeeded with failure %ld injected, but the stage cannot write: %s", n,
                   s.last_error);
    }
    ASSERT_EQ(s3c_stage_close(st, NULL), 0);
}

static void undo_open(struct job *j)
{
    check_works_and_close(j->st, j->nth);
}

/* Opens cleanly, lets the pool warm up, then with allocations failing across every
 * thread submits one commit and closes: the persistence thread's PUT and the shutdown
 * run with the failure. Close returns 0, or the commit was lost and the report says so. */
static int call_close(struct job *j)
{
    struct s3c_close_report rep;
    struct s3c_stats s;
    uint64_t seq = 0;
    int rc;

    allocfail_disarm();
    if (s3c_stage_open(j->cfg, &j->st, j->err, sizeof(j->err)) != 0)
        TEST_FAIL_("open: %s", j->err);
    for (int i = 0; i < 2000; i++) {
        s3c_stats_get(j->st, &s);
        if (s.pool_opens >= 2)
            break;
        sleep_ms(1);
    }
    sleep_ms(2);
    allocfail_arm(j->nth, j->persistent, true, j->kinds);
    ASSERT_EQ(s3c_submit(j->st, "commit", 6, 1000, &seq), 0);
    if (getenv("AF_VERBOSE") && s3c_stage_drain(j->st, NULL)) { /* close drains once */
        s3c_stats_get(j->st, &s);
        fprintf(stderr, "   allocation %ld failed: %s\n", j->nth, s.last_error);
    }
    rc = s3c_stage_close(j->st, &rep);
    j->st = NULL;
    if (rc == 0) {
        ASSERT_UEQ(rep.durable_seq, seq);
        return 0;
    }
    ASSERT(rc == S3C_EFAILED || rc == S3C_ETIMEDOUT);
    ASSERT_UEQ(rep.lost_first_seq, seq);
    snprintf(j->err, sizeof(j->err), "commit lost: %s", s3c_strerror(rc));
    if (allocfail_hits() == 0)
        return rc;
    /* One allocation failing is a transient error: the PUT is retried and the commit
     * made durable. Every allocation failing from the Nth on may lose it: that is an
     * answer (the report names the seq), not a failure of close. */
    if (!j->persistent)
        TEST_FAIL_("s3c_stage_close, allocation %ld failed (one-shot): the commit was lost "
                   "(%s); one failed allocation must cost a retry, not the commit",
                   j->nth, s3c_strerror(rc));
    j->lost = true;
    return 0;
}

/* ---- the cases ----------------------------------------------------------------------- */

static void test_config_parse(void)
{
    fail_each("s3c_config_parse", call_parse, undo_parse, false, AF_KIND_ALLOC);
    fail_each("s3c_config_parse", call_parse, undo_parse, true, AF_KIND_ALLOC);
}

static int call_dump_with_cfg(struct job *j)
{
    j->cfg = stage_cfg; /* parsed unarmed in warm_up() */
    return call_dump(j);
}

static void test_config_dump(void)
{
    fail_each("s3c_config_dump", call_dump_with_cfg, undo_dump, false, AF_KIND_ALLOC);
    fail_each("s3c_config_dump", call_dump_with_cfg, undo_dump, true, AF_KIND_ALLOC);
}

static int call_open_stage(struct job *j)
{
    j->cfg = stage_cfg;
    return call_open(j);
}

static int call_close_stage(struct job *j)
{
    j->cfg = stage_cfg;
    return call_close(j);
}

static void test_stage_open(void)
{
    stage_s3_extra = ",\"direct_put\":false"; /* libcurl's allocations fail too */
    fail_each("s3c_stage_open", call_open_stage, undo_open, false, AF_KIND_ALLOC);
    /* A sample: with everything failing, an open waits out its retries. */
    fail_each_every("s3c_stage_open", call_open_stage, undo_open, true, AF_KIND_ALLOC, 16);
    stage_s3_extra = ""; /* the default: the pool's warm-up on direct connections */
    fail_each("s3c_stage_open (direct PUTs)", call_open_stage, undo_open, false,
              AF_KIND_ALLOC & ~AF_KIND(AF_CURL));
    fail_each_every("s3c_stage_open (direct PUTs)", call_open_stage, undo_open, true,
                    AF_KIND_ALLOC & ~AF_KIND(AF_CURL), 16);
}

/* The OS refusing a thread, an epoll set, an eventfd, a timerfd or a socket: open must
 * fail as cleanly as when memory runs out. */
static void test_stage_open_os(void)
{
    fail_each("s3c_stage_open", call_open_stage, undo_open, false, AF_KIND_SYS);
    fail_each_every("s3c_stage_open", call_open_stage, undo_open, true, AF_KIND_SYS, 4);
}

static void test_stage_close(void)
{
    fail_each("s3c_stage_close", call_close_stage, NULL, false, AF_KIND_ALLOC);
    /* A sample: with everything failing, each close waits out shutdown_timeout_ms. */
    fail_each_every("s3c_stage_close", call_close_stage, NULL, true, AF_KIND_ALLOC, 32);
}

/* ---- a running stage ---------------------------------------------------------------------
 * One stage with heartbeats every 20 ms; for N = 1, 2, ... the Nth allocation in any
 * thread fails while a commit is submitted and made durable and heartbeats run. One
 * failure costs a retry (of a PUT, a heartbeat or a connection), never the commit or the
 * stage. libcurl's own allocations are not failed here: in libcurl (7.88.1, and still in
 * later multi.c) a failed allocation in singlesocket's per-socket transfer hash leaves
 * that hash destroyed in the socket hash, and the next transfer added to the socket
 * divides by its zero slots (SIGFPE): the heartbeats' pause and resume find it. */
static void *stage_running_main(void *arg)
{
    char json[sizeof(cfg_json) + 64], err[512];
    s3c_config *cfg = NULL;
    s3c_stage *st = NULL;
    struct s3c_stats s;
    long n;

    snprintf(json, sizeof(json), "%s", cfg_json);
    char *hb = strstr(json, "\"heartbeat_interval_ms\":600000");
    ASSERT(hb);
    memcpy(hb, "\"heartbeat_interval_ms\":20    ", strlen("\"heartbeat_interval_ms\":600000"));
    ASSERT_EQ(s3c_config_parse(json, strlen(json), &cfg, err, sizeof(err)), 0);
    ASSERT_EQ(s3c_stage_open(cfg, &st, err, sizeof(err)), 0);
    sleep_ms(100);
    for (n = 1; n < MAX_N; n++) {
        uint64_t seq = 0;
        if (getenv("AF_VERBOSE"))
            fprintf(stderr, "   running stage, allocation %ld\n", n);
        allocfail_arm(n, false, true, AF_KIND_ALLOC & ~AF_KIND(AF_CURL));
        ASSERT_EQ(s3c_submit(st, "commit", 6, 1000, &seq), 0);
        int rc = s3c_wait_durable(st, seq, 10000);
        sleep_ms(30); /* a heartbeat round */
        allocfail_disarm();
        if (rc != 0) {
            s3c_stats_get(st, &s);
            TEST_FAIL_("running stage, allocation %ld failed (one-shot): commit %llu not "
                       "durable: %d, %s",
                       n, (unsigned long long)seq, rc, s.last_error);
        }
        if (allocfail_hits() == 0)
            break;
    }
    s3c_stats_get(st, &s);
    ASSERT_EQ(s.failed, 0);
    ASSERT_EQ(s3c_stage_close(st, NULL), 0);
    s3c_config_free(cfg);
    fprintf(stderr,
            "   running stage: %ld allocations (ours, cJSON, OpenSSL) per commit and "
            "heartbeat round, each failed in turn (one-shot); %llu heartbeats failed, %llu "
            "connections opened\n",
            n - 1, (unsigned long long)s.pool_heartbeat_failures, (unsigned long long)s.pool_opens);
    *(long *)arg = n;
    return NULL;
}

/* On its own thread, like the loops above: the signer's per-thread state goes with it. */
static void test_stage_running(void)
{
    struct allocfail_live before = allocfail_live_now();
    int tasks = ntasks(), fds = nfds();
    long n = 0;
    pthread_t t;

    ASSERT_EQ(pthread_create(&t, NULL, stage_running_main, &n), 0);
    ASSERT_EQ(pthread_join(t, NULL), 0);
    check_nothing_left(&before, tasks, fds, "running stage", n, false);
}

/* ---- a fresh process: the first open --------------------------------------------------
 * The loops above run after one clean open, so what a process sets up once (the signer's
 * algorithms and thread key, OpenSSL's lazy set-up) never fails there. Here each N runs
 * in a fork that has not opened a stage yet: the Nth allocation of its first open fails,
 * and then the open must work (if it succeeded) or a second open, unarmed, must give a
 * working stage. A once-only set-up that stays failed would leave the process unable to
 * write. Exit 0: no failure was injected; 1: one was, and the process recovered. */
/* A crash in a fork says where before it dies. */
static void first_open_crashed(int sig)
{
    void *pcs[48];
    fprintf(stderr, "first open: signal %d at:\n", sig);
    backtrace_symbols_fd(pcs, backtrace(pcs, 48), 2);
    signal(sig, SIG_DFL);
    raise(sig);
}

static int first_open_child(long n)
{
    s3c_stage *st = NULL;
    char err[512];
    int rc;
    long hits;

    signal(SIGSEGV, first_open_crashed);
    signal(SIGBUS, first_open_crashed);
    signal(SIGFPE, first_open_crashed);
    allocfail_arm(n, false, false, AF_KIND_ALLOC);
    rc = s3c_stage_open(stage_cfg, &st, err, sizeof(err));
    allocfail_disarm();
    hits = allocfail_hits();
    if (rc != 0) {
        if (!hits)
            TEST_FAIL_("first open failed with nothing failing: %s", err);
        rc = s3c_stage_open(stage_cfg, &st, err, sizeof(err));
        if (rc != 0) {
            /* OpenSSL 3.0 does not retry its own once-only set-up: a failed allocation in
             * the process's first EVP_MD_fetch can leave every later fetch failing. Then
             * refusing to open is the right answer; anything else is ours. */
            EVP_MD *md = EVP_MD_fetch(NULL, "SHA256", NULL);
            EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
            bool openssl_broken = !md || !mac;
            EVP_MD_free(md);
            EVP_MAC_free(mac);
            if (openssl_broken && strstr(err, "OpenSSL"))
                return 2;
            TEST_FAIL_("first open, allocation %ld failed, and the next open failed too: %s", n,
                       err);
        }
    }
    check_works_and_close(st, n);
    return hits ? 1 : 0;
}

static void test_first_open(void)
{
    long poisoned = 0, from = getenv("AF_FROM") ? atol(getenv("AF_FROM")) : 1;
    /* Every 4th N (AF_FROM=N: start at N, to debug one): most of the ~2,700 points are
     * OpenSSL's provider set-up, and a fork per point costs 10 ms. */
    long stride = getenv("AF_FROM") ? 1 : 4;
    for (long n = from; n < MAX_N; n += stride) {
        int status;
        stage_s3_extra = ",\"direct_put\":false"; /* libcurl's allocations fail too */
        fresh_stage_cfg();
        stage_s3_extra = "";
        fflush(stderr);
        pid_t pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0)
            _exit(first_open_child(n));
        ASSERT_EQ(waitpid(pid, &status, 0), pid);
        if (!WIFEXITED(status))
            TEST_FAIL_("first open, allocation %ld failed: the process died (signal %d)", n,
                       WTERMSIG(status));
        if (WEXITSTATUS(status) == 0) {
            fprintf(stderr,
                    "   first s3c_stage_open of a process: %ld allocations, every 4th failed "
                    "(one-shot); the process then opened a working stage, except %ld times "
                    "when OpenSSL could no longer fetch SHA-256 or HMAC and open said so\n",
                    n - 1, poisoned);
            return;
        }
        poisoned += WEXITSTATUS(status) == 2;
        ASSERT(WEXITSTATUS(status) == 1 || WEXITSTATUS(status) == 2);
    }
    TEST_FAIL_("the first open still hit an injected failure at allocation %d", MAX_N);
}

/* One clean run of everything, unarmed: the process's one-time initialisation. */
static void warm_up(void)
{
    struct job j = {
        .nth = MAX_N, .kinds = AF_KIND_ALLOC, .call = call_open_stage, .undo = undo_open};
    pthread_t t;

    ASSERT_EQ(pthread_create(&t, NULL, job_main, &j), 0);
    ASSERT_EQ(pthread_join(t, NULL), 0);
    ASSERT_EQ(j.rc, 0);
}

int main(void)
{
    const char *args[] = {"--access-key", AK, "--secret-key", SK, NULL};

    allocfail_install();
    ASSERT_EQ(mockproc_start(&mock, args), 0);
    snprintf(cfg_json, sizeof(cfg_json),
             "{\"s3\":{\"endpoint\":\"%s\",\"bucket\":\"commits\",\"prefix\":\"af/\","
             "\"region\":\"us-east-1\",\"access_key_id\":\"" AK "\","
             "\"secret_access_key\":\"" SK "\",\"request_timeout_ms\":500},"
             "\"persistence\":{\"max_in_flight_requests\":1,\"target_pool_size\":2,"
             "\"batch_timeout_ms\":1,\"max_retry_attempts\":2,\"retry_base_delay_ms\":5,"
             "\"max_retry_delay_ms\":20,\"heartbeat_interval_ms\":600000,"
             "\"shutdown_timeout_ms\":1000},"
             "\"pipeline\":{\"ring_bytes\":65536,\"max_commit_bytes\":4096},"
             "\"log\":{\"level\":\"error\"},\"metrics\":{\"listen\":\"127.0.0.1:0\"}}",
             mock.endpoint);
    stage_cfg = parse_or_die();
    RUN(test_first_open); /* before anything in this process has opened a stage */
    warm_up();
    RUN(test_config_parse);
    RUN(test_config_dump);
    RUN(test_stage_open);
    RUN(test_stage_open_os);
    RUN(test_stage_close);
    RUN(test_stage_running);
    s3c_config_free(stage_cfg);
    mockproc_stop(&mock);
    return 0;
}
