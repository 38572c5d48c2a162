/* s3commit-mock's entry: flags, the listening socket, the first stdout line
 * "listening on HOST:PORT", then the worker loops until SIGTERM/SIGINT (exit 0).
 * It must never echo a secret key or session token. */
#include "mock.h"
#include "s3commit.h"

#include <arpa/inet.h>
#include <errno.h>
#include <malloc.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct mock g_mock;

static void mock_usage(FILE *f)
{
    fprintf(f, "usage: s3commit-mock [flags]\n"
               "  --listen HOST:PORT         address (default 127.0.0.1:9000; port 0 picks one)\n"
               "  --bucket NAME              create this bucket at start (repeatable)\n"
               "  --access-key AK --secret-key SK   verify SigV4 (else accept unsigned)\n"
               "                             (the secret may come from $S3C_MOCK_SECRET_KEY)\n"
               "  --session-token T          require this x-amz-security-token\n"
               "  --region R                 region of the credential scope (us-east-1)\n"
               "  --data-dir DIR             keep objects on disk (fsync'd, atomic rename)\n"
               "  --store memory|disk|none   none: check every request, keep no bodies\n"
               "  --etag md5|kms             md5: ETag = MD5 of the body (default); kms: as\n"
               "                             S3 under SSE-KMS (opaque ETag, no MD5 computed)\n"
               "  --max-object-bytes N       largest body accepted (67108864)\n"
               "  --threads N                event loops (default: CPUs, at most 4)\n"
               "  --request-timeout-ms N     idle started request -> 400 RequestTimeout (20000)\n"
               "  --idle-timeout-ms N        close connections idle between requests (0 = never)\n"
               "  --max-skew-s N             x-amz-date skew allowed (900; 0 = any)\n"
               "  --vhost-domain D           Host 'b.D' addresses bucket b\n"
               "  --seed N                   fault RNG seed (same seed, same choices)\n"
               "faults (probabilities 0..1; see docs/mock.md):\n"
               "  --latency-ms N --latency-jitter-ms N --error-rate P --error-status 500|503|403\n"
               "  --written-error-rate P --reset-rate P --stall-rate P --slow-close P\n"
               "  --slow-close-ms N --bandwidth BYTES_PER_S --conflict-rate P\n"
               "  --fault-key-prefix S       faults only for object keys starting with S\n"
               "  -h, --help                 this text\n"
               "  -V, --version              prints \"s3commit-mock VERSION\"\n"
               "first stdout line: \"listening on HOST:PORT\"; SIGTERM/SIGINT stop it\n"
               "exit codes: 0 stopped by a signal, 1 could not listen or open the store,\n"
               "  2 bad flags\n");
}

static int mock_parse_double(const char *flag, const char *v, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (!*v || *end || errno || d < lo || d > hi) {
        fprintf(stderr, "s3commit-mock: %s must be a number in [%g, %g] (got '%s')\n", flag, lo, hi,
                v);
        return -1;
    }
    *out = d;
    return 0;
}

static int mock_open_listener(const char *hostport, int *port_out, char *host_out, size_t hcap)
{
    char host[256];
    const char *colon = strrchr(hostport, ':');
    if (!colon || colon == hostport || (size_t)(colon - hostport) >= sizeof(host)) {
        fprintf(stderr, "s3commit-mock: --listen wants HOST:PORT such as 127.0.0.1:0 (got '%s')\n",
                hostport);
        return -1;
    }
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = '\0';
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    int e = getaddrinfo(host, colon + 1, &hints, &ai);
    if (e != 0) {
        fprintf(stderr, "s3commit-mock: --listen %s: %s\n", hostport, gai_strerror(e));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 4096) < 0) {
        fprintf(stderr, "s3commit-mock: cannot listen on %s: %s\n", hostport, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    if (ss.ss_family == AF_INET6)
        *port_out = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    else
        *port_out = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    snprintf(host_out, hcap, "%s", host);
    return fd;
}

int main(int argc, char **argv)
{
    struct mock *m = &g_mock;
    struct mock_cfg *cfg = &m->cfg;
    const char *listen_at = "127.0.0.1:9000";
    const char *buckets[64];
    int nbuckets = 0;
    const char *store = NULL, *etag = "md5";
    double d;

    cfg->region = "us-east-1";
    cfg->max_object_bytes = 64ull << 20;
    cfg->request_timeout_ms = 20000;
    cfg->max_skew_s = 900;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->threads = ncpu < 1 ? 1 : ncpu > 4 ? 4 : (int)ncpu;
    m->faults.error_status = 503;
    m->faults.slow_close_ms = 1000;

    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            mock_usage(stdout);
            return 0;
        }
        if (!strcmp(f, "--version") || !strcmp(f, "-V")) {
            printf("s3commit-mock %s\n", s3c_version());
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "s3commit-mock: %s needs a value (see --help)\n", f);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(f, "--listen"))
            listen_at = v;
        else if (!strcmp(f, "--bucket")) {
            if (nbuckets == 64) {
                fprintf(stderr, "s3commit-mock: at most 64 --bucket flags\n");
                return 2;
            }
            buckets[nbuckets++] = v;
        } else if (!strcmp(f, "--access-key"))
            cfg->access_key = v;
        else if (!strcmp(f, "--secret-key"))
            cfg->secret_key = v;
        else if (!strcmp(f, "--session-token"))
            cfg->session_token = v;
        else if (!strcmp(f, "--region"))
            cfg->region = v;
        else if (!strcmp(f, "--data-dir"))
            cfg->data_dir = v;
        else if (!strcmp(f, "--store"))
            store = v;
        else if (!strcmp(f, "--etag"))
            etag = v;
        else if (!strcmp(f, "--vhost-domain"))
            cfg->vhost_domain = v;
        else if (!strcmp(f, "--fault-key-prefix")) {
            size_t n = strlen(v);
            if (n >= sizeof(m->faults.key_prefix)) {
                fprintf(stderr,
                        "s3commit-mock: --fault-key-prefix is at most 1024 bytes (got %zu)\n", n);
                return 2;
            }
            memcpy(m->faults.key_prefix, v, n + 1);
            m->faults.key_prefix_len = n;
        } else if (!strcmp(f, "--seed")) {
            char *end;
            cfg->seed = strtoull(v, &end, 0);
            if (!*v || *end) {
                fprintf(stderr, "s3commit-mock: --seed wants an integer (got '%s')\n", v);
                return 2;
            }
        } else {
            struct {
                const char *flag;
                double lo, hi;
                double *dst;
                int *idst;
                uint64_t *udst;
            } num[] = {
                {"--latency-ms", 0, 3600000, &m->faults.latency_ms, NULL, NULL},
                {"--latency-jitter-ms", 0, 3600000, &m->faults.latency_jitter_ms, NULL, NULL},
                {"--error-rate", 0, 1, &m->faults.error_rate, NULL, NULL},
                {"--written-error-rate", 0, 1, &m->faults.written_error_rate, NULL, NULL},
                {"--reset-rate", 0, 1, &m->faults.reset_rate, NULL, NULL},
                {"--stall-rate", 0, 1, &m->faults.stall_rate, NULL, NULL},
                {"--slow-close", 0, 1, &m->faults.slow_close, NULL, NULL},
                {"--slow-close-ms", 0, 3600000, &m->faults.slow_close_ms, NULL, NULL},
                {"--bandwidth", 0, 1e12, &m->faults.bandwidth_bytes_per_s, NULL, NULL},
                {"--conflict-rate", 0, 1, &m->faults.conflict_rate, NULL, NULL},
                {"--error-status", 403, 503, NULL, &m->faults.error_status, NULL},
                {"--threads", 1, 64, NULL, &cfg->threads, NULL},
                {"--request-timeout-ms", 0, 3600000, NULL, &cfg->request_timeout_ms, NULL},
                {"--idle-timeout-ms", 0, 3600000, NULL, &cfg->idle_timeout_ms, NULL},
                {"--max-skew-s", 0, 1e9, NULL, &cfg->max_skew_s, NULL},
                {"--max-object-bytes", 0, 1e12, NULL, NULL, &cfg->max_object_bytes},
            };
            size_t k;
            for (k = 0; k < sizeof(num) / sizeof(num[0]); k++)
                if (!strcmp(f, num[k].flag))
                    break;
            if (k == sizeof(num) / sizeof(num[0])) {
                fprintf(stderr, "s3commit-mock: unknown flag %s (see --help)\n", f);
                return 2;
            }
            if (mock_parse_double(f, v, num[k].lo, num[k].hi, &d) < 0)
                return 2;
            if (num[k].dst)
                *num[k].dst = d;
            else if (num[k].idst)
                *num[k].idst = (int)d;
            else
                *num[k].udst = (uint64_t)d;
            if (!strcmp(f, "--error-status") && d != 500 && d != 503 && d != 403) {
                fprintf(stderr, "s3commit-mock: --error-status must be 500, 503 or 403\n");
                return 2;
            }
        }
    }
    if (!cfg->secret_key)
        cfg->secret_key = getenv("S3C_MOCK_SECRET_KEY");
    if ((cfg->access_key != NULL) != (cfg->secret_key != NULL)) {
        fprintf(stderr, "s3commit-mock: give both --access-key and --secret-key, or neither\n");
        return 2;
    }
    if (!store)
        cfg->store = cfg->data_dir ? STORE_DISK : STORE_MEMORY;
    else if (!strcmp(store, "memory"))
        cfg->store = STORE_MEMORY;
    else if (!strcmp(store, "disk"))
        cfg->store = STORE_DISK;
    else if (!strcmp(store, "none"))
        cfg->store = STORE_NONE;
    else {
        fprintf(stderr, "s3commit-mock: --store must be memory, disk or none (got '%s')\n", store);
        return 2;
    }
    if (!strcmp(etag, "md5")) {
        cfg->etag = ETAG_MD5;
    } else if (!strcmp(etag, "kms")) {
        cfg->etag = ETAG_KMS;
    } else {
        fprintf(stderr, "s3commit-mock: --etag must be md5 or kms (got '%s')\n", etag);
        return 2;
    }
    if (cfg->store == STORE_DISK && !cfg->data_dir) {
        fprintf(stderr, "s3commit-mock: --store disk needs --data-dir DIR\n");
        return 2;
    }
    if (cfg->store != STORE_DISK && cfg->data_dir) {
        fprintf(stderr, "s3commit-mock: --data-dir keeps objects on disk; drop --store %s\n",
                store);
        return 2;
    }

    char err[512];
    /* Bodies up to 32 MiB come from the heap and freed ones stay there: with glibc's
     * defaults each 1 MiB body is an mmap whose pages fault in (and are zeroed) as it is
     * filled, then an munmap, which cost more than copying the body (docs/mock.md). */
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
    m->store = store_open(cfg->store, cfg->data_dir, err, sizeof(err));
    if (!m->store) {
        fprintf(stderr, "s3commit-mock: %s\n", err);
        return 1;
    }
    for (int i = 0; i < nbuckets; i++) {
        int rc = store_create_bucket(m->store, buckets[i]);
        if (rc < 0 && rc != -EEXIST) {
            fprintf(stderr, "s3commit-mock: --bucket %s: %s (names are 3-63 of a-z 0-9 . -)\n",
                    buckets[i], rc == -EINVAL ? "not a valid bucket name" : strerror(-rc));
            store_close(m->store);
            return 2;
        }
    }
    faults_init(m, cfg->seed);
    pthread_mutex_init(&m->key_mu, NULL);

    /* SIGTERM/SIGINT are taken by sigwait in server_run; workers inherit the mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    int port;
    int lfd = mock_open_listener(listen_at, &port, cfg->listen_host, sizeof(cfg->listen_host));
    if (lfd < 0) {
        store_close(m->store);
        return 1;
    }
    cfg->listen_port = port;
    printf("listening on %s:%d\n", cfg->listen_host, port);
    fflush(stdout);
    fprintf(stderr, "s3commit-mock: store=%s etag=%s threads=%d sigv4=%s buckets=%d\n",
            cfg->store == STORE_MEMORY ? "memory"
            : cfg->store == STORE_DISK ? "disk"
                                       : "none",
            etag, cfg->threads, cfg->access_key ? "on" : "off", nbuckets);

    int rc = server_run(m, lfd);
    close(lfd);
    store_close(m->store);
    return rc == 0 ? 0 : 1;
}
