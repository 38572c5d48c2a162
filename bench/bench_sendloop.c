/* bench-sendloop: what one sending thread costs the kernel per byte on this machine,
 * against two, with no s3commit code in the way. Each sender thread send()s 1 MiB
 * messages from an 8 MiB buffer over its own 127.0.0.1 connection to a receiving thread
 * that recv()s them into 1 MiB; the senders' and receivers' thread CPU per GB is measured
 * (CLOCK_THREAD_CPUTIME_ID). One thread and two alternate, three times each, and a last line
 * holds the medians and their ratio. It is the yardstick for issue 16's target 4: the
 * transport is one thread by design (the persistence thread's loop), wrk -t2 is two
 * (docs/transport.md, "Target 4 with direct PUTs the default"). Bounded: 2 GB a run. */
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "wrk.h" /* bench_median */

#define MIB (1u << 20)
#define RUN_BYTES (2ull << 30)

struct conn {
    int lfd;
    struct sockaddr_in addr;
    uint64_t bytes;     /* to move on this connection */
    double send_cpu_s;  /* the sender thread's CPU */
    double recv_cpu_s;  /* the receiver thread's CPU */
    int failed;
};

static double thread_cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void *receiver(void *arg)
{
    struct conn *c = arg;
    int s = accept(c->lfd, NULL, NULL);
    char *buf = malloc(MIB);
    uint64_t got = 0;
    double c0 = thread_cpu_s();
    while (s >= 0 && buf && got < c->bytes) {
        ssize_t n = recv(s, buf, MIB, 0);
        if (n <= 0)
            break;
        got += (uint64_t)n;
    }
    c->recv_cpu_s = thread_cpu_s() - c0;
    if (got != c->bytes)
        c->failed = 1;
    if (s >= 0)
        close(s);
    free(buf);
    return NULL;
}

static void *sender(void *arg)
{
    struct conn *c = arg;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    char *buf = malloc(8 * MIB);
    if (s < 0 || !buf || connect(s, (struct sockaddr *)&c->addr, sizeof(c->addr)) != 0) {
        c->failed = 1;
        if (s >= 0)
            close(s);
        free(buf);
        return NULL;
    }
    memset(buf, 0x5A, 8 * MIB);
    double c0 = thread_cpu_s();
    for (uint64_t sent = 0, k = 0; sent < c->bytes; sent += MIB, k++) {
        const char *b = buf + (k % 8) * MIB;
        for (size_t off = 0; off < MIB;) {
            ssize_t n = send(s, b + off, MIB - off, 0);
            if (n <= 0) {
                c->failed = 1;
                goto out;
            }
            off += (size_t)n;
        }
    }
out:
    c->send_cpu_s = thread_cpu_s() - c0;
    close(s);
    free(buf);
    return NULL;
}

/* One run with n sender threads (each with its receiver) moving RUN_BYTES in all. */
static int run(int n, double *send_s_per_gb, double *recv_s_per_gb, double *gb_per_s)
{
    struct conn c[2];
    pthread_t st[2], rt[2];
    double gb = (double)RUN_BYTES / (double)(1u << 30), t0 = now_s();
    for (int i = 0; i < n; i++) {
        memset(&c[i], 0, sizeof(c[i]));
        c[i].bytes = RUN_BYTES / (uint64_t)n;
        c[i].lfd = socket(AF_INET, SOCK_STREAM, 0);
        c[i].addr = (struct sockaddr_in){.sin_family = AF_INET,
                                         .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t al = sizeof(c[i].addr);
        if (c[i].lfd < 0 || bind(c[i].lfd, (struct sockaddr *)&c[i].addr, al) != 0 ||
            getsockname(c[i].lfd, (struct sockaddr *)&c[i].addr, &al) != 0 ||
            listen(c[i].lfd, 1) != 0)
            return -1;
        pthread_create(&rt[i], NULL, receiver, &c[i]);
        pthread_create(&st[i], NULL, sender, &c[i]);
    }
    double snd = 0, rcv = 0;
    int failed = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(st[i], NULL);
        pthread_join(rt[i], NULL);
        close(c[i].lfd);
        snd += c[i].send_cpu_s;
        rcv += c[i].recv_cpu_s;
        failed |= c[i].failed;
    }
    *send_s_per_gb = snd / gb;
    *recv_s_per_gb = rcv / gb;
    *gb_per_s = gb / (now_s() - t0);
    return failed ? -1 : 0;
}

int main(void)
{
    double send1[3], send2[3], recv1[3], recv2[3];
    for (int k = 0; k < 3; k++) {
        for (int n = 1; n <= 2; n++) {
            double s, r, g;
            if (run(n, &s, &r, &g) != 0) {
                fprintf(stderr, "bench-sendloop: a loopback connection failed\n");
                return 1;
            }
            (n == 1 ? send1 : send2)[k] = s;
            (n == 1 ? recv1 : recv2)[k] = r;
            printf("{\"bench\":\"sendloop\",\"senders\":%d,\"gb\":2,\"sender_cpu_s_per_gb\":%.3f,"
                   "\"receiver_cpu_s_per_gb\":%.3f,\"gb_per_s\":%.2f}\n",
                   n, s, r, g);
            fflush(stdout);
        }
    }
    double s1 = bench_median(send1, 3), s2 = bench_median(send2, 3);
    printf("{\"bench\":\"sendloop\",\"run\":\"one_vs_two\",\"one_sender_cpu_s_per_gb\":%.3f,"
           "\"two_senders_cpu_s_per_gb\":%.3f,\"one_over_two\":%.2f,"
           "\"one_receiver_cpu_s_per_gb\":%.3f,\"two_receivers_cpu_s_per_gb\":%.3f}\n",
           s1, s2, s2 > 0 ? s1 / s2 : 0, bench_median(recv1, 3), bench_median(recv2, 3));
    return 0;
}
