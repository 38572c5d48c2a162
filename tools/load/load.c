/* s3commit-load: drives the library in-process the way a transaction processor would
 * (P producer threads calling s3c_submit) and measures each commit from submit to its
 * durable callback. It never counts a commit acknowledged that the stage did not report
 * durable, and it always stops the mock it started. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "config/config.h"
#include "load.h"
#include "tool.h"

#define LOAD_SAMPLE_MS 100             /* throughput sample interval */
#define LOAD_PROGRESS_MS 250           /* progress line refresh on a terminal */
#define LOAD_OPEN_ENDED_CAP (1u << 26) /* commits a --duration run without --rate may reach */
#define LOAD_MAX_MOCK_ARGS 32

struct load_opts {
    const char *config;
    uint64_t commits;  /* 0 with --duration */
    double duration_s; /* 0 with --commits */
    uint64_t size_min, size_max;
    int producers;
    double rate; /* 0 = unthrottled */
    const char *report;
    bool mock;
    const char *mock_args[LOAD_MAX_MOCK_ARGS + 8];
    int nmock_args;
    uint64_t seed;
};

/* A watermark move as the durable callback saw it. */
struct ack_event {
    uint64_t w;
    uint64_t t_ns; /* since t0 */
};

struct load {
    struct load_opts o;
    s3c_stage *st;
    uint64_t t0_ns;
    uint64_t cap;        /* commits this run may submit (sizes the arrays) */
    uint64_t base;       /* the seq before this run's first (the log continues, seq > base) */
    uint64_t *submit_ns; /* [seq]: 1 + ns since t0 when s3c_submit returned; 0 = never */
    size_t submit_bytes;
    struct ack_event *events; /* appended by the durable callback only */
    size_t events_bytes;
    uint64_t nevents;         /* written by the callback; read after close */
    uint64_t last_w;          /* callback's view of the previous watermark */
    uint64_t out_of_order;    /* callbacks that did not move the watermark forward */
    _Atomic uint64_t durable; /* newest watermark, for the main thread */
    _Atomic int stage_err;
    _Atomic uint64_t tickets; /* commits claimed by producers */
    _Atomic uint64_t submitted, bytes_submitted, max_seq, submit_errors;
    _Atomic int producers_done;
    _Atomic bool stop;
    char first_error[256];
    pthread_mutex_t err_lock;
};

struct producer {
    struct load *l;
    int id;
    pthread_t thread;
    unsigned char *payload; /* size_max random bytes */
    uint64_t rng;
    struct hist wait_us;
};

static volatile sig_atomic_t load_signalled;

static void load_on_signal(int sig)
{
    (void)sig;
    load_signalled = 1;
}

static uint64_t load_xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static void *load_map_array(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void load_fail(struct load *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void load_fail(struct load *l, const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&l->err_lock);
    if (!l->first_error[0]) {
        va_start(ap, fmt);
        vsnprintf(l->first_error, sizeof(l->first_error), fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&l->err_lock);
    atomic_store(&l->stop, true);
}

/* Durable subscriber: on the persistence thread, so it only records and returns. */
static void load_on_durable(void *ctx, uint64_t w, int err)
{
    struct load *l = ctx;
    uint64_t t = s3c__now_ns() - l->t0_ns;
    if (err) {
        atomic_store(&l->stage_err, err);
        return;
    }
    if (w <= l->last_w) {
        l->out_of_order++;
        return;
    }
    l->last_w = w;
    if (l->nevents < l->cap)
        l->events[l->nevents++] = (struct ack_event){w, t};
    atomic_store(&l->durable, w);
}

static void load_sleep_until_ns(uint64_t t_abs_ns)
{
    struct timespec ts = {(time_t)(t_abs_ns / 1000000000u), (long)(t_abs_ns % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static void *load_producer_main(void *arg)
{
    struct producer *p = arg;
    struct load *l = p->l;
    uint64_t span = l->o.size_max - l->o.size_min + 1;
    uint64_t end_ns =
        l->o.duration_s > 0 ? l->t0_ns + (uint64_t)(l->o.duration_s * 1e9) : UINT64_MAX;

    while (!atomic_load_explicit(&l->stop, memory_order_relaxed)) {
        uint64_t ticket = atomic_fetch_add(&l->tickets, 1);
        if (ticket >= l->cap) {
            if (ticket == l->cap && l->o.duration_s > 0)
                S3C_LOG(S3C_LOG_WARN,
                        "event=load_capacity_reached commits=%" PRIu64
                        " msg=\"the run stops early: give --rate or use --commits\"",
                        l->cap);
            break;
        }
        if (l->o.rate > 0) /* ticket k is due at t0 + k / rate: one schedule for all */
            load_sleep_until_ns(l->t0_ns + (uint64_t)((double)ticket * 1e9 / l->o.rate));
        uint64_t now = s3c__now_ns();
        if (now >= end_ns)
            break;
        size_t len = (size_t)(l->o.size_min + load_xorshift(&p->rng) % span);
        if (len >= sizeof(ticket))
            memcpy(p->payload, &ticket, sizeof(ticket)); /* every commit differs */
        uint64_t seq = 0;
        int rc;
        while ((rc = s3c_submit(l->st, p->payload, len, 500, &seq)) == S3C_ETIMEDOUT)
            if (atomic_load(&l->stop))
                break;
        uint64_t done = s3c__now_ns();
        if (rc != 0) {
            if (rc != S3C_ETIMEDOUT) {
                atomic_fetch_add(&l->submit_errors, 1);
                load_fail(l, "s3c_submit failed: %s", s3c_strerror(rc));
            }
            break;
        }
        if (seq <= l->base || seq - l->base > l->cap) {
            load_fail(l, "s3c_submit returned seq %" PRIu64 ", outside %" PRIu64 "..%" PRIu64, seq,
                      l->base + 1, l->base + l->cap);
            break;
        }
        l->submit_ns[seq - l->base] = done - l->t0_ns + 1;
        hist_record(&p->wait_us, (done - now) / 1000);
        atomic_fetch_add_explicit(&l->submitted, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&l->bytes_submitted, len, memory_order_relaxed);
        uint64_t m = atomic_load(&l->max_seq);
        while (seq > m && !atomic_compare_exchange_weak(&l->max_seq, &m, seq))
            ;
    }
    atomic_fetch_add(&l->producers_done, 1);
    return NULL;
}

/* p99 from the stage's own log2 histogram (for the live line only; the report uses the
 * per-commit measurement). */
static uint64_t load_stats_p99_us(const struct s3c_stats *s)
{
    uint64_t n = 0, seen = 0;
    for (int i = 0; i < 24; i++)
        n += s->ack_latency_hist[i];
    if (!n)
        return 0;
    uint64_t rank = n - n / 100;
    for (int i = 0; i < 24; i++) {
        seen += s->ack_latency_hist[i];
        if (seen >= rank)
            return (uint64_t)1 << i;
    }
    return (uint64_t)1 << 23;
}

static void load_progress_line(const struct load *l, const struct s3c_stats *s,
                               const struct load_sample *prev, const struct load_sample *cur)
{
    double dt = cur->t_s - prev->t_s;
    if (dt <= 0)
        return;
    double cps = (double)(cur->commits_durable - prev->commits_durable) / dt;
    double mbs = (double)(cur->bytes_durable - prev->bytes_durable) / dt / 1e6;
    fprintf(stderr,
            "\r[%6.1fs] %10.0f commits/s %8.2f MB/s  in flight %2u  retries %-4" PRIu64
            "  p99 < %.2f ms  acked %" PRIu64 "   ",
            cur->t_s, cps, mbs, s->in_flight, s->retries, (double)load_stats_p99_us(s) / 1000,
            s->commits_durable);
    (void)l;
}

static void load_usage(FILE *f)
{
    fputs("usage: s3commit-load [--config FILE] (--commits N | --duration SECONDS)\n"
          "                     --size BYTES|MIN-MAX --producers P [--rate R]\n"
          "                     [--report out.json] [--mock [--mock-arg ARG]...] [--seed N]\n"
          "  --commits N       submit N commits, then wait until all are durable\n"
          "  --duration S      submit for S seconds, then wait until all are durable\n"
          "  --size            commit size in bytes, fixed or uniform in MIN-MAX (k/M suffixes)\n"
          "  --producers P     producer threads calling s3c_submit\n"
          "  --rate R          commits/s over all producers (default: as fast as possible)\n"
          "  --report F        write the JSON report to F and an SVG plot beside it\n"
          "                    (default: JSON on stdout, no plot)\n"
          "  --mock            start s3commit-mock on 127.0.0.1 (port chosen by the kernel)\n"
          "                    and point the config at it; --config is then optional\n"
          "  --mock-arg ARG    pass ARG to the mock (repeat: --mock-arg --latency-ms\n"
          "                    --mock-arg 5); default --store none\n"
          "  --seed N          seed of the commit sizes and contents (default 42)\n"
          "  -h, --help        this text\n"
          "  -V, --version     prints \"s3commit-load VERSION\"\n"
          "exit codes: 0 every submitted commit was acknowledged, in order; 1 not so (the\n"
          "  report says why); 2 bad flags or config\n",
          f);
}

static int load_parse_args(int argc, char **argv, struct load_opts *o)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"commits", required_argument, NULL, 'n'},
        {"duration", required_argument, NULL, 'd'},
        {"size", required_argument, NULL, 's'},
        {"producers", required_argument, NULL, 'p'},
        {"rate", required_argument, NULL, 'r'},
        {"report", required_argument, NULL, 'o'},
        {"mock", no_argument, NULL, 'm'},
        {"mock-arg", required_argument, NULL, 'a'},
        {"seed", required_argument, NULL, 'S'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    bool have_size = false, have_producers = false;
    uint64_t v;
    int c;

    memset(o, 0, sizeof(*o));
    o->seed = 42;
    while ((c = getopt_long(argc, argv, "hV", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            o->config = optarg;
            break;
        case 'n':
            if (!tool_parse_size(optarg, &o->commits) || o->commits == 0) {
                tool_error("--commits %s: expected a positive integer", optarg);
                return -1;
            }
            break;
        case 'd':
            if (!tool_parse_double(optarg, &o->duration_s)) {
                tool_error("--duration %s: expected a positive number of seconds", optarg);
                return -1;
            }
            break;
        case 's':
            if (!tool_parse_size_range(optarg, &o->size_min, &o->size_max) || o->size_max == 0 ||
                o->size_max > (1u << 30)) {
                tool_error("--size %s: expected BYTES or MIN-MAX (MIN <= MAX, at most 1G)", optarg);
                return -1;
            }
            have_size = true;
            break;
        case 'p':
            if (!tool_parse_size(optarg, &v) || v == 0 || v > 1024) {
                tool_error("--producers %s: expected 1..1024", optarg);
                return -1;
            }
            o->producers = (int)v;
            have_producers = true;
            break;
        case 'r':
            if (!tool_parse_double(optarg, &o->rate)) {
                tool_error("--rate %s: expected a positive number of commits per second", optarg);
                return -1;
            }
            break;
        case 'o':
            o->report = optarg;
            break;
        case 'm':
            o->mock = true;
            break;
        case 'a':
            if (o->nmock_args >= LOAD_MAX_MOCK_ARGS) {
                tool_error("--mock-arg: at most %d", LOAD_MAX_MOCK_ARGS);
                return -1;
            }
            o->mock_args[o->nmock_args++] = optarg;
            break;
        case 'S':
            if (!tool_parse_size(optarg, &o->seed)) {
                tool_error("--seed %s: expected a non-negative integer", optarg);
                return -1;
            }
            break;
        case 'h':
            load_usage(stdout);
            exit(0);
        case 'V':
            printf("s3commit-load %s\n", s3c_version());
            exit(0);
        default:
            load_usage(stderr);
            return -1;
        }
    }
    if (optind < argc) {
        tool_error("unexpected argument '%s' (--help)", argv[optind]);
        return -1;
    }
    if ((o->commits > 0) == (o->duration_s > 0)) {
        tool_error("give exactly one of --commits N or --duration SECONDS");
        return -1;
    }
    if (!have_size || !have_producers) {
        tool_error("--size and --producers are required (--help)");
        return -1;
    }
    if (!o->config && !o->mock) {
        tool_error("--config FILE is required unless --mock is given");
        return -1;
    }
    if (o->nmock_args && !o->mock) {
        tool_error("--mock-arg needs --mock");
        return -1;
    }
    return 0;
}

static bool load_has_arg(const struct load_opts *o, const char *name)
{
    for (int i = 0; i < o->nmock_args; i++)
        if (strcmp(o->mock_args[i], name) == 0)
            return true;
    return false;
}

/* Joins submit times with watermark moves: a seq's ack time is the first move that
 * covers it. Fills the latency histogram and counts what was acked. */
static void load_measure(struct load *l, struct load_result *res)
{
    uint64_t max_seq = atomic_load(&l->max_seq), e = 0;
    for (uint64_t seq = l->base + 1; seq <= max_seq; seq++) {
        if (l->submit_ns[seq - l->base] == 0) {
            res->unacked++; /* a hole in the seqs we were given: counted as a failure */
            continue;
        }
        while (e < l->nevents && l->events[e].w < seq)
            e++;
        if (e == l->nevents) {
            res->unacked++;
            continue;
        }
        uint64_t sub = l->submit_ns[seq - l->base] - 1, ack = l->events[e].t_ns;
        hist_record(&res->ack_us, ack > sub ? (ack - sub) / 1000 : 0);
        res->commits_acked++;
    }
}

int main(int argc, char **argv)
{
    struct load l = {0};
    struct load_result res = {0};
    struct mockproc mock = {0};
    struct producer *prods = NULL;
    struct load_sample *samples = NULL;
    size_t nsamples = 0, samples_cap = 0;
    s3c_config *cfg = NULL;
    char err[512] = "", svg_path[4096] = "";
    int exit_code = TOOL_EXIT_FAIL, started = 0;

    tool_set_name("s3commit-load");
    if (load_parse_args(argc, argv, &l.o) != 0)
        return TOOL_EXIT_USAGE;
    pthread_mutex_init(&l.err_lock, NULL);

    if (l.o.config) {
        if (tool_config_load(l.o.config, &cfg) != 0)
            return TOOL_EXIT_USAGE;
    } else {
        static const char builtin[] = "{\"s3\":{\"bucket\":\"commits\"}}";
        if (s3c_config_parse(builtin, strlen(builtin), &cfg, err, sizeof(err)) != 0) {
            tool_error("built-in config: %s", err);
            return TOOL_EXIT_FAIL;
        }
    }
    tool_log_setup(cfg->log_level);

    struct sigaction sa = {.sa_handler = load_on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    if (l.o.mock) {
        const char **a = l.o.mock_args;
        int n = l.o.nmock_args;
        if (!load_has_arg(&l.o, "--store") && !load_has_arg(&l.o, "--data-dir")) {
            a[n++] = "--store"; /* a load test needs no bodies kept */
            a[n++] = "none";
        }
        if (!load_has_arg(&l.o, "--bucket")) {
            a[n++] = "--bucket";
            a[n++] = cfg->s3.bucket;
        }
        a[n] = NULL;
        if (tool_mock_start(&mock, a) != 0)
            goto out_free_config;
        if (s3c_config_set_endpoint(cfg, mock.endpoint) != 0) {
            tool_error("cannot point the config at the mock (%s)", mock.endpoint);
            goto out_stop_mock;
        }
    }
    res.endpoint = cfg->s3.endpoint;
    res.mock = l.o.mock;

    /* Per-seq arrays sized to the run (reserved, touched only as seqs arrive). */
    if (l.o.commits)
        l.cap = l.o.commits;
    else if (l.o.rate > 0)
        l.cap = (uint64_t)ceil(l.o.rate * l.o.duration_s * 1.01) + 1024;
    else
        l.cap = LOAD_OPEN_ENDED_CAP;
    l.submit_bytes = (size_t)(l.cap + 1) * sizeof(uint64_t);
    l.events_bytes = (size_t)(l.cap + 1) * sizeof(struct ack_event);
    l.submit_ns = load_map_array(l.submit_bytes);
    l.events = load_map_array(l.events_bytes);
    prods = calloc((size_t)l.o.producers, sizeof(*prods));
    if (!l.submit_ns || !l.events || !prods) {
        tool_error("cannot reserve memory for %" PRIu64 " commits", l.cap);
        goto out_free_arrays;
    }

    int rc = s3c_stage_open(cfg, &l.st, err, sizeof(err));
    if (rc != 0) {
        tool_error("cannot open the stage: %s", err[0] ? err : s3c_strerror(rc));
        goto out_free_arrays;
    }
    if (s3c_subscribe(l.st, load_on_durable, &l) != 0) {
        tool_error("cannot subscribe to durability events");
        goto out_close_stage;
    }
    struct s3c_stage_info info;
    s3c_stage_info(l.st, &info);
    l.base = info.first_seq - 1;
    atomic_store(&l.max_seq, l.base);
    res.epoch = info.epoch;
    res.first_seq = info.first_seq;

    for (int i = 0; i < l.o.producers; i++) {
        struct producer *p = &prods[i];
        p->l = &l;
        p->id = i;
        p->rng = (l.o.seed + 1) * 0x9E3779B97F4A7C15ull ^ (uint64_t)(i + 1);
        hist_init(&p->wait_us);
        p->payload = malloc(l.o.size_max + 8);
        if (!p->payload) {
            tool_error("out of memory for payloads");
            goto out_join;
        }
        for (uint64_t b = 0; b < l.o.size_max + 8; b++)
            p->payload[b] = (unsigned char)load_xorshift(&p->rng);
    }
    S3C_LOG(S3C_LOG_INFO,
            "event=load_start producers=%d size_min=%" PRIu64 " size_max=%" PRIu64
            " commits=%" PRIu64 " duration_s=%.3f rate=%.0f endpoint=%s",
            l.o.producers, l.o.size_min, l.o.size_max, l.o.commits, l.o.duration_s, l.o.rate,
            cfg->s3.endpoint);
    l.t0_ns = s3c__now_ns();
    for (int i = 0; i < l.o.producers; i++) {
        if (pthread_create(&prods[i].thread, NULL, load_producer_main, &prods[i]) != 0) {
            load_fail(&l, "cannot start producer thread %d", i);
            break;
        }
        started++;
    }

    /* Sample, show progress, and wait for the producers, then for durability. */
    bool tty = isatty(STDERR_FILENO);
    uint64_t last_progress = 0, drain_deadline = 0;
    int drain_ms = cfg->persistence.shutdown_timeout_ms + 5000;
    struct load_sample prev_shown = {0};
    for (;;) {
        struct s3c_stats s;
        s3c_stats_get(l.st, &s);
        uint64_t now = s3c__now_ns();
        if (nsamples == samples_cap) {
            size_t cap = samples_cap ? samples_cap * 2 : 256;
            struct load_sample *nb = realloc(samples, cap * sizeof(*nb));
            if (nb) {
                samples = nb;
                samples_cap = cap;
            }
        }
        struct load_sample cur = {(double)(now - l.t0_ns) / 1e9, s.commits_durable, s.bytes_durable,
                                  s.in_flight};
        if (nsamples < samples_cap)
            samples[nsamples++] = cur;
        if (tty && nsamples == 1) {
            prev_shown = cur; /* the first line needs an interval to show a rate */
            last_progress = now / 1000000;
        } else if (tty && now / 1000000 - last_progress >= LOAD_PROGRESS_MS) {
            load_progress_line(&l, &s, &prev_shown, &cur);
            prev_shown = cur;
            last_progress = now / 1000000;
        }
        if (load_signalled && !atomic_load(&l.stop)) {
            atomic_store(&l.stop, true);
            S3C_LOG(S3C_LOG_INFO, "event=signal action=stop_submitting");
        }
        if (atomic_load(&l.stage_err) != 0) {
            load_fail(&l, "the stage failed: %s%s%s", s3c_strerror(atomic_load(&l.stage_err)),
                      s.last_error[0] ? ": " : "", s.last_error);
            if (atomic_load(&l.producers_done) == started)
                break;
        }
        if (atomic_load(&l.producers_done) == started) {
            if (!drain_deadline)
                drain_deadline = now / 1000000 + (uint64_t)drain_ms;
            if (atomic_load(&l.durable) >= atomic_load(&l.max_seq))
                break;
            if (now / 1000000 >= drain_deadline) {
                load_fail(&l, "commits were still not durable %d ms after the last submit",
                          drain_ms);
                break;
            }
        }
        struct timespec ts = {0, LOAD_SAMPLE_MS * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (tty)
        fputc('\n', stderr);

out_join:
    atomic_store(&l.stop, true);
    for (int i = 0; i < started; i++)
        pthread_join(prods[i].thread, NULL);
out_close_stage:;
    struct s3c_stats s;
    struct s3c_close_report rep = {0};
    s3c_stats_get(l.st, &s);
    if (s.local_seq > 0) { /* a spool: its figures once L has the last commit too */
        s3c_wait_local(l.st, atomic_load(&l.max_seq), 5000);
        s3c_stats_get(l.st, &s);
    }
    int close_rc = s3c_stage_close(l.st, &rep);
    l.st = NULL;
    if (close_rc != 0)
        load_fail(&l,
                  "closing the stage: %s (durable_seq %" PRIu64 ", lost %" PRIu64 "..%" PRIu64 ")",
                  s3c_strerror(close_rc), rep.durable_seq, rep.lost_first_seq, rep.lost_last_seq);

    /* The figures. Everything below reads what the threads wrote before they stopped. */
    res.producers = l.o.producers;
    res.size_min = l.o.size_min;
    res.size_max = l.o.size_max;
    res.rate = l.o.rate;
    res.commits_target = l.o.commits;
    res.duration_target_s = l.o.duration_s;
    res.commits_submitted = atomic_load(&l.submitted);
    res.bytes_submitted = atomic_load(&l.bytes_submitted);
    res.bytes_acked = s.bytes_durable;
    res.durable_seq = rep.durable_seq;
    res.out_of_order_acks = l.out_of_order;
    res.submit_errors = atomic_load(&l.submit_errors);
    res.batches = s.batches_sent;
    res.retries = s.retries;
    res.put_attempts = s.put_attempts;
    res.failures_retryable = s.failures_retryable;
    res.failures_fatal = s.failures_fatal;
    res.pool_opens = s.pool_opens;
    res.pool_reuses = s.pool_reuses;
    res.spool = s.local_seq > 0; /* with a spool, L is past the control record at least */
    res.local_seq = s.local_seq;
    res.spool_bytes = s.spool_bytes;
    res.spool_skipped = s.spool_skipped;
    res.spool_reads = s.spool_reads;
    hist_init(&res.ack_us);
    hist_init(&res.submit_wait_us);
    for (int i = 0; i < l.o.producers; i++)
        hist_merge(&res.submit_wait_us, &prods[i].wait_us);
    load_measure(&l, &res);
    if (l.nevents)
        res.duration_s = (double)l.events[l.nevents - 1].t_ns / 1e9;
    else
        res.duration_s = (double)(s3c__now_ns() - l.t0_ns) / 1e9;
    /* A watermark beyond anything submitted would be an ack of a commit never made. */
    if (l.nevents && l.events[l.nevents - 1].w > atomic_load(&l.max_seq))
        res.out_of_order_acks++;
    res.samples = samples;
    res.nsamples = nsamples;

    if (!l.first_error[0] && res.commits_acked != res.commits_submitted)
        load_fail(&l, "%" PRIu64 " of %" PRIu64 " submitted commits were not acknowledged",
                  res.commits_submitted - res.commits_acked, res.commits_submitted);
    if (!l.first_error[0] && res.out_of_order_acks)
        load_fail(&l, "%" PRIu64 " acknowledgements arrived out of order", res.out_of_order_acks);
    if (!l.first_error[0] && res.commits_submitted == 0)
        load_fail(&l, "no commit was submitted");
    if (load_signalled && !l.first_error[0])
        load_fail(&l, "stopped by a signal before the run was complete");
    snprintf(res.error, sizeof(res.error), "%s", l.first_error);
    res.ok = !l.first_error[0];

    if (l.o.report) {
        size_t n = strlen(l.o.report);
        if (n > 5 && strcmp(l.o.report + n - 5, ".json") == 0)
            snprintf(svg_path, sizeof(svg_path), "%.*s.svg", (int)(n - 5), l.o.report);
        else
            snprintf(svg_path, sizeof(svg_path), "%s.svg", l.o.report);
    }
    if (load_report_json(&res, l.o.report ? l.o.report : "-", l.o.report ? svg_path : NULL) != 0) {
        tool_error("cannot write the report %s: %s", l.o.report, strerror(errno));
        res.ok = false;
    }
    if (l.o.report && load_report_svg(&res, svg_path) != 0) {
        tool_error("cannot write the plot %s: %s", svg_path, strerror(errno));
        res.ok = false;
    }
    fprintf(stderr,
            "s3commit-load: %" PRIu64 "/%" PRIu64 " commits acked in %.2f s: %.0f commits/s, "
            "%.2f MB/s, %" PRIu64 " batches, %" PRIu64 " retries, ack p50 %" PRIu64
            " us p99 %" PRIu64 " us%s%s\n",
            res.commits_acked, res.commits_submitted, res.duration_s,
            res.duration_s > 0 ? (double)res.commits_acked / res.duration_s : 0,
            res.duration_s > 0 ? (double)res.bytes_acked / res.duration_s / 1e6 : 0, res.batches,
            res.retries, hist_quantile(&res.ack_us, 0.5), hist_quantile(&res.ack_us, 0.99),
            res.ok ? "" : "; FAILED: ", res.error);
    exit_code = res.ok ? TOOL_EXIT_OK : TOOL_EXIT_FAIL;

out_free_arrays:
    if (prods)
        for (int i = 0; i < l.o.producers; i++)
            free(prods[i].payload);
    free(prods);
    free(samples);
    if (l.submit_ns)
        munmap(l.submit_ns, l.submit_bytes);
    if (l.events)
        munmap(l.events, l.events_bytes);
    s3c_stage_close(l.st, NULL); /* only still open on an early error path */
out_stop_mock:
    if (mock.pid)
        mockproc_stop(&mock);
out_free_config:
    s3c_config_free(cfg);
    pthread_mutex_destroy(&l.err_lock);
    return exit_code;
}
