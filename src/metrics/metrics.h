/* The Prometheus exporter: renders struct s3c_stats in the text exposition format 0.0.4
 * and serves it on GET /metrics from a thread of its own. It only reads snapshots handed
 * to it by collect(); it never touches the persistence thread or the ring. */
#ifndef S3C_METRICS_H
#define S3C_METRICS_H

#include <stddef.h>

#include "s3commit.h"

/* Writes the exposition text for st into buf (NUL-terminated). Returns its length, or -1
 * when buf is too small (16 KiB is ample). Pure; any thread. */
int metrics_render(const struct s3c_stats *st, char *buf, size_t len);

struct metrics_srv;

/* Called on the server's thread for each scrape; fills *out (zeroed beforehand). Must be
 * thread-safe with respect to the rest of the program (s3c_stats_get is). */
typedef void (*metrics_collect_fn)(void *ctx, struct s3c_stats *out);

/* Listens on "HOST:PORT" (IPv6 as "[::1]:9464"; port 0 picks a free port) and starts the
 * server thread. Returns the server, or NULL with one message in err. collect and ctx must
 * stay valid until metrics_srv_stop() returns. */
struct metrics_srv *metrics_srv_start(const char *addr, metrics_collect_fn collect, void *ctx,
                                      char *err, size_t errlen);

/* The port actually bound (useful with port 0). */
int metrics_srv_port(const struct metrics_srv *m);

/* Stops the thread, closes the sockets and frees m. After it returns collect is never
 * called again. NULL is a no-op. */
void metrics_srv_stop(struct metrics_srv *m);

#endif
