/* The reader's parts (s3c_reader in include/s3commit.h), shared between its files: the
 * prefetch window (window.c), the chain rules (chain.c), where reading starts (seek.c),
 * waiting and follow mode (follow.c) and the public calls (reader.c). Single-threaded:
 * everything runs on the thread that calls s3c_reader_next, on the reader's own loop. */
#ifndef S3C_READER_INT_H
#define S3C_READER_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "format/objfmt.h"
#include "loop/loop.h"
#include "s3commit.h"
#include "transport/transport.h"

#define RD_MAX_WINDOW 64
#define RD_SEEK_WINDOW 16        /* header GETs in flight while seeking */
#define RD_SEEK_WIDEN_MAX 64     /* a contested seek looks this many max_batch_commits down */
#define RD_SEEK_HEADERS_MAX 4096 /* and reads at most this many headers; then from seq 1 */

enum rslot_state { RS_IDLE, RS_WIRE, RS_DONE, RS_MISSING, RS_FAILED };

struct rslot { /* one object GET of the window (or a seek's header GET) */
    struct s3c_reader *rd;
    char key[OBJ_KEY_MAX];
    uint64_t first; /* from the key */
    enum rslot_state state;
    int attempts;
    uint64_t retry_at_ns; /* RS_IDLE after a failure: not before */
    bool header_only;     /* a seek's header read */
    bool dropped;         /* dropped while its GET was on the wire: freed when it lands */
    struct rslot *next;   /* the reader's list of dropped slots */
    unsigned char *body;  /* RS_DONE: the body, taken from the transport (malloc'd) */
    size_t len, cap;
    struct obj_stream st; /* the body's CRCs, computed as it lands */
    char error[1024];
};

struct rpage { /* one ListObjectsV2 page: keys not yet taken into slots */
    char **keys;
    uint64_t *first;
    size_t n, pos;
};

struct s3c_reader {
    struct s3c_config cfg; /* a copy; secrets wiped at close */
    struct loop *loop;
    struct xport *x;
    uint64_t from, to;
    bool follow;
    uint64_t poll_ns;
    int window;

    uint64_t last;       /* the last seq of the chain taken so far: the next object is at +1 */
    uint64_t floor;      /* epoch of the last EPOCH_START on the chain so far */
    uint64_t manifest_w; /* the manifest's durable_seq at open: the chain reaches it */
    uint64_t manifest_start_epoch; /* its start_epoch: the floor at manifest_w */
    bool floor_at_w; /* entered by a seek below manifest_w: the floor is unknown until it */

    /* the object being returned: records point into it until the next call */
    unsigned char *cur;
    size_t cur_len, cur_off, cur_cap;
    uint32_t cur_left;
    struct obj_header cur_h;

    /* keys ahead, in key order: the page, then GETs in the window */
    struct rpage page;
    struct rslot *slots[2 * RD_MAX_WINDOW]; /* window GETs in flight + as many read ahead */
    int nslots;                             /* slots[0] is the lowest key */
    int ahead; /* slots beyond window r->window may hold (read, waiting for the head) */
    char *token;
    bool list_wire, list_more, list_need;
    int list_attempts;
    uint64_t list_retry_at;
    uint64_t poll_at; /* follow: when to look for more */
    bool at_end;      /* the last look found the end of the chain */

    struct rslot *dropped; /* slots whose GET is still on the wire */
    int err;
    char error[1024];
    struct s3c_reader_stats st;
};

/* reader.c: records the reader's error (sticky) and returns code. */
int rd_fail(struct s3c_reader *r, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The stage's backoff for a retry's attempt (1-based), capped by max_retry_delay_ms. */
uint64_t rd_backoff_ns(const struct s3c_reader *r, int attempt);

/* window.c: the listing page and the window of GETs ahead of the caller. */
/* An object buffer done with: given back to the transport (freed once it is gone). */
void rd_buf_done(struct s3c_reader *r, unsigned char *buf, size_t cap);
void rd_slot_free(struct rslot *s);
int rd_start_get(struct s3c_reader *r, struct rslot *s); /* 0 or S3C_E* (slot RS_FAILED) */
void rd_drop_head(struct s3c_reader *r);                 /* the lowest slot */
void rd_drop_all(struct s3c_reader *r);                  /* slots, page and token */
void rd_start_list(struct s3c_reader *r, bool fresh);    /* fresh: from the chain's end */
void rd_top_up(struct s3c_reader *r);                    /* keys into slots, GETs started */

/* chain.c: the chain rules. */
enum rd_step { RD_GOT, RD_WAIT, RD_END, RD_ERROR };
enum rd_step rd_next_object(struct s3c_reader *r);
bool rd_take_record(struct s3c_reader *r, struct s3c_record *rec);

/* follow.c: at the end of the chain (RD_END): S3C_EEND, an error, 1 when a new listing was
 * started (look again), or 0 to wait until *wake at most. */
int rd_at_end(struct s3c_reader *r, uint64_t now, uint64_t *wake);
/* Runs the loop once, until the first retry due, wake, or 1 s at most: 0; 1 when a
 * listing retry was due and started instead (look again); S3C_ETIMEDOUT when deadline has
 * passed; another S3C_E* when the loop failed. */
int rd_wait(struct s3c_reader *r, uint64_t now, uint64_t deadline, uint64_t wake);

/* seek.c: reads the manifest and positions r->last / r->floor before from_seq. */
int rd_position(struct s3c_reader *r);

#endif
