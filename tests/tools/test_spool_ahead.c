/* A stage whose spool writes slowly (each write group held AH_SLOW_US through
 * spool_test_io), so S3 can hold objects for commits the spool has not written yet. The
 * object of seq G is refused (503), a gap that keeps W below it as after an outage. Once
 * the spool holds G..G+30, its writes stop for good (the test creates a file the hook looks
 * for), the commits after go on for a while, and the stage is killed with SIGKILL. Then
 * `s3commit run` on the same spool and log must open, send what the spool kept, and the
 * log must hold every commit the killed stage called locally durable, once, in order, with
 * its bytes. The stage runs in a forked child of this test (the hook is the library's, so
 * it cannot be put into the s3commit program); every process is stopped by pid.
 *
 * A PUT may land before the spool has its commits, so the killed stage leaves an object
 * that starts right after the spool's last seq: at the key where the next start puts its
 * fence. Past the gap nobody acknowledged it, so the start must replace it (an orphan);
 * taken for the chain moving on, the start never places its fence ("could not place our
 * fence after 50 tries"), as before main's 62be867. The test checks that its setup made
 * that object (a GET of the key); if the stage ever stops sending ahead of its spool,
 * that check, not the rule, fails.
 *
 * S3 takes the commits before G faster than the slow spool writes them, so the spool the
 * kill leaves holds SKIP frames (their seqs without their bytes) before G: the start reads
 * past them, trims them as in S3 (the log holds them) and replays from G. The test counts
 * them in the killed spool's segment files (as the open reads frames) and requires some. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "s3commit.h"
#include "spool/spool.h"
#include "spoolrun.h"
#include "test.h"

#define AH_COMMITS 5000 /* at most, one every AH_GAP_US: more than the child lives for */
#define AH_GAP_US 5000
#define AH_SLOW_US 40000 /* each write group waits this long: about 10 commits a group */
#define AH_GAP_AT 200    /* G, after the first seq */
/* The spool stops when its last seq X is within G..G+AH_WINDOW: the stage keeps at most
 * 4 x max_in_flight_requests (32) objects past W, so objects reach G+31, and X+1 is one. */
#define AH_WINDOW 30

static char tmpdir[256];
static char bin_s3commit[512];
static char stall_path[600]; /* once it exists, the spool's writes wait forever */

static ssize_t ah_slow_pwrite(int fd, const void *buf, size_t len, off_t off)
{
    usleep(AH_SLOW_US);
    while (access(stall_path, F_OK) == 0)
        usleep(10000); /* until the SIGKILL */
    return pwrite(fd, buf, len, off);
}

static const struct spool_io ah_slow_io = {.pwrite = ah_slow_pwrite};

/* SKIP frames in the segment files of dir: each file's frames from its start, while they
 * decode (the magic, a length inside the file) and carry the first frame's tag, up to
 * 8 zero bytes (the padding of an O_DIRECT write) or an END. */
static int ah_skip_frames(const char *dir)
{
    DIR *d = opendir(dir);
    ASSERT(d != NULL);
    int skips = 0;
    struct dirent *e;
    static unsigned char buf[8u << 20];
    while ((e = readdir(d)) != NULL) {
        size_t nl = strlen(e->d_name);
        if (nl < 4 || strcmp(e->d_name + nl - 4, ".seg") != 0)
            continue;
        char path[900];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        ASSERT(f != NULL);
        size_t n = fread(buf, 1, sizeof(buf), f);
        fclose(f);
        uint32_t tag0 = 0;
        for (size_t off = 0; off + 48 <= n;) {
            static const unsigned char zeros[8];
            uint32_t magic, len, tag;
            if (memcmp(buf + off, zeros, 8) == 0)
                break;
            memcpy(&magic, buf + off, 4);
            memcpy(&len, buf + off + 8, 4);
            memcpy(&tag, buf + off + 44, 4);
            if (magic != 0x50533353u || off + 48 + ((len + 7u) & ~7u) > n)
                break;
            if (off == 0)
                tag0 = tag;
            else if (tag != tag0)
                break; /* a recycled file's old life */
            skips += buf[off + 4] == SPOOL_SKIP;
            if (buf[off + 4] == SPOOL_END)
                break;
            off += 48 + ((len + 7u) & ~7u);
        }
    }
    closedir(d);
    return skips;
}

/* The child: opens the stage, says its first seq, then submits one commit every AH_GAP_US
 * and reports L and W after each; it is killed before it runs out. */
static void ah_child(const char *cfg_path, int out)
{
    char err[512], line[128], payload[SR_COMMIT_MAX];
    s3c_config *cfg = NULL;
    s3c_stage *st = NULL;
    spool_test_io = &ah_slow_io;
    if (s3c_config_load(cfg_path, &cfg, err, sizeof(err)) != 0 ||
        s3c_stage_open(cfg, &st, err, sizeof(err)) != 0) {
        fprintf(stderr, "child: %s\n", err);
        _exit(1);
    }
    struct s3c_stage_info info;
    s3c_stage_info(st, &info);
    int n = snprintf(line, sizeof(line), "first %" PRIu64 "\n", info.first_seq);
    if (write(out, line, (size_t)n) != n)
        _exit(1);
    for (uint32_t i = 0; i < AH_COMMITS; i++) {
        uint64_t seq;
        if (s3c_submit(st, payload, sr_commit(0, i, payload), -1, &seq) != 0)
            _exit(1);
        n = snprintf(line, sizeof(line), "L %" PRIu64 " W %" PRIu64 "\n", s3c_local_seq(st),
                     s3c_durable_seq(st));
        if (write(out, line, (size_t)n) != n)
            _exit(1);
        usleep(AH_GAP_US);
    }
    _exit(2); /* the parent kills us long before */
}

static void test_put_ahead_of_spool_then_kill(void)
{
    char data[600], spool[600], cfg[600];
    snprintf(data, sizeof(data), "%s/mock", tmpdir);
    snprintf(spool, sizeof(spool), "%s/spool", tmpdir);
    snprintf(cfg, sizeof(cfg), "%s/run.json", tmpdir);
    ASSERT(mkdir(data, 0700) == 0);
    struct mockproc m;
    sr_mock_start(&m, data);
    /* one commit an object: every seq starts one, so the key after the spool's last seq is
     * taken whenever an object ahead of the spool landed */
    sr_config(cfg, m.endpoint, spool, 4u << 20, 1u << 20, ",\"batch_size_threshold\":1");

    /* The child's first seq is 2 (a new log): G is known before it starts. */
    uint64_t gap = 2 + AH_GAP_AT;
    char answer[4096], body[256], key[128];
    snprintf(key, sizeof(key), SR_PREFIX "log/%020" PRIu64 ".s3c", gap);
    snprintf(body, sizeof(body), "{\"error_rate\":1.0,\"error_status\":503,\"key_prefix\":\"%s\"}",
             key);
    ASSERT_EQ(sr_http(&m, "PUT", "/_mock/faults", body, answer, sizeof(answer)), 200);
    snprintf(stall_path, sizeof(stall_path), "%s/stall", tmpdir);

    int fds[2];
    ASSERT(pipe(fds) == 0);
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        ah_child(cfg, fds[1]);
    }
    track_child(pid);
    close(fds[1]);
    FILE *in = fdopen(fds[0], "r");
    ASSERT(in != NULL);
    char line[128];
    uint64_t first = 0, l = 0, w = 0, max_l = 0, max_w = 0, lines = 0, stalled_at = 0;
    while (fgets(line, sizeof(line), in)) { /* the child writes a line every AH_GAP_US */
        if (sscanf(line, "first %" SCNu64, &first) == 1) {
            ASSERT_UEQ(first, 2);
        } else if (sscanf(line, "L %" SCNu64 " W %" SCNu64, &l, &w) == 2) {
            max_l = l > max_l ? l : max_l;
            max_w = w > max_w ? w : max_w;
            lines++;
        }
        if (!stalled_at && max_l >= gap) {
            if (max_l > gap + AH_WINDOW)
                TEST_FAIL_("the spool went from below %" PRIu64 " to %" PRIu64 " in one write", gap,
                           max_l);
            write_file(stall_path, "");
            stalled_at = lines;
        }
        if (stalled_at && lines - stalled_at >= 100) /* 500 ms more of commits */
            break;
    }
    ASSERT(stalled_at > 0);
    ASSERT_EQ(kill(pid, SIGKILL), 0);
    int status;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    untrack_child(pid);
    fclose(in);
    ASSERT(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    ASSERT(max_w < gap); /* the gap held */
    /* The case: an object after the spool's last seq landed. */
    snprintf(key, sizeof(key), "/commits/" SR_PREFIX "log/%020" PRIu64 ".s3c", max_l + 1);
    int ahead = sr_http(&m, "GET", key, NULL, answer, sizeof(answer));
    fprintf(stderr,
            "   killed after %" PRIu64 " commits: local_seq %" PRIu64 " durable_seq %" PRIu64
            " (gap at %" PRIu64 "); GET %s: %d\n",
            lines, max_l, max_w, gap, key, ahead);
    ASSERT_EQ(ahead, 200);
    int skips = ah_skip_frames(spool);
    fprintf(stderr, "   the killed spool holds %d SKIP frames\n", skips);
    ASSERT_GT(skips, 0);
    sr_outage(&m, false);

    /* The next start opens, sends what the spool kept, and stops. */
    struct proc p;
    struct sr_out o;
    ASSERT_EQ(sr_run_drain(bin_s3commit, cfg, &p, &o, 60000), 0);
    proc_free(&p);

    /* Every commit the child called locally durable, at its seq, and nothing else. */
    ASSERT(o.control_seq > max_l);
    sr_check_run0(bin_s3commit, cfg, first, o.control_seq - first, o.control_seq);
    untrack_child(m.pid);
    mockproc_stop(&m);
}

int main(void)
{
    const char *bindir = getenv("S3C_BIN_DIR");
    if (!bindir) {
        fprintf(stderr, "S3C_BIN_DIR is not set (run through ctest)\n");
        return 1;
    }
    snprintf(bin_s3commit, sizeof(bin_s3commit), "%s/s3commit", bindir);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/s3c-test-spool-ahead-XXXXXX");
    ASSERT(mkdtemp(tmpdir) != NULL);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGABRT, on_abort);
    RUN(test_put_ahead_of_spool_then_kill);
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return 0;
}
