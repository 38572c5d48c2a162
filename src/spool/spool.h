/* The local spool (docs/spool.md): a write-ahead log on local disk in front of S3. The
 * persistence thread hands it the ring's commits as chunks (and, per object it forms, a
 * seal naming the object's seqs); threads of its own (a writer, which hands large writes
 * to a submitter, and a flusher) append them to segment files and make each write group
 * durable with one fdatasync before anything in it counts as locally durable (the
 * watermark L). Segments W, the S3-durable watermark, has passed are recycled (written
 * over by a later segment) or deleted. At open the directory is locked, every segment is
 * checked frame by frame, and a torn tail is cut: nothing after it is trusted.
 *
 * Segment files are <dir>/<first seq, 20 digits>.seg: a BEGIN frame, a run of frames and,
 * once closed, an END frame; each frame a 48-byte header (magic, type, payload length,
 * record count, first and last seq, epoch, CRC-32C of the header and payload, the segment's
 * tag) and its payload padded to 8 bytes. After the last frame may come zeros (a prepared
 * segment, or the rest of the last 4 KiB block written with O_DIRECT) or, in a recycled
 * file, its old life's bytes, whose frames carry another tag. A CHUNK's payload is its
 * records exactly as the object format lays them out (record header, then bytes), so an
 * object is its header, the payloads of its chunks, and its trailer. */
#ifndef S3C_SPOOL_H
#define S3C_SPOOL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "pipeline/ring.h"

#define SPOOL_FRAME_HEADER 48

enum spool_type {
    SPOOL_CHUNK = 1,  /* commits first..last: their records */
    SPOOL_SEAL = 2,   /* an object was formed of first..last: replay keeps its bounds */
    SPOOL_OBJECT = 3, /* a whole object to send as it is (a run's control record) */
    SPOOL_BEGIN = 4,  /* a segment's first frame: first = last = its name; its tag */
    SPOOL_END = 5,    /* a closed segment's last frame (first = last = its name) */
    SPOOL_SKIP = 6,   /* commits first..last, without their records: W had passed them
                       * before the writer got to them (they are in S3), so every seq at or
                       * below last was acknowledged durable in S3 by this frame's run */
    /* In BEGIN and END the epoch field holds W as it stood when the frame was written (the
     * S3-durable seq the stage had acknowledged; 0 in spools written before): every seq
     * at or below it is on the log's chain with these bytes, an anchor the open follows
     * the chain from (docs/spool.md, "Crash recovery"). */
};

/* Header byte 5: how a frame's CRC was made. 0 (spools written before it): a CHUNK's CRC
 * covers its header and its records' 16-byte headers; SPOOL_CRC_PAYLOAD: header and the
 * whole payload, as SEAL and OBJECT frames always were. Both are read. */
#define SPOOL_CRC_PAYLOAD 1
/* Header bytes 44-47 hold the tag of the segment's life (its BEGIN frame's), and the CRC
 * covers them after header bytes 0-39: a recycled segment file's old frames carry another
 * tag, so they never read as frames of its new life (docs/spool.md, "Recycled segments"). */
#define SPOOL_CRC_TAG 2

struct spool_frame {
    enum spool_type type;
    uint8_t flags;  /* SPOOL_CRC_PAYLOAD, SPOOL_CRC_TAG, or 0 */
    uint32_t len;   /* payload bytes */
    uint32_t count; /* records in a CHUNK */
    uint64_t first, last, epoch;
    uint32_t tag; /* SPOOL_CRC_TAG: the segment life's tag */
};

/* Where a frame starts: the segment (its first seq) and the offset in it. */
struct spool_pos {
    uint64_t seg, off;
};

/* One append, filled by the persistence thread and pushed; the spool thread fills pos
 * before the request counts as written. */
struct spool_req {
    enum spool_type type;
    uint64_t first, last, epoch;
    uint32_t count;
    uint64_t len;         /* CHUNK: record bytes (headers and payloads) */
    uint32_t crc;         /* CHUNK: CRC-32C of those bytes (obj_records_crc), by the pusher */
    struct ring_batch rb; /* CHUNK: the ring batch holding the records */
    struct spool_pos pos; /* written by the spool thread */
    uint64_t user[4];     /* the persistence thread's own bookkeeping */
};

/* What the open found on disk. */
struct spool_scan {
    uint64_t first_seq, last_seq; /* of the CHUNK/OBJECT frames kept (0, 0: none) */
    uint64_t last_epoch;          /* the epoch of the frame holding last_seq */
    uint64_t last_commit_seq;     /* the last seq of the CHUNK frames kept (0: none) */
    uint64_t last_commit_epoch;   /* its epoch: the run that accepted it */
    uint64_t w_mark; /* the highest W a BEGIN or END frame recorded, or a SKIP's last (0: none) */
    uint64_t bytes;  /* in segment files */
    int segments;
    uint64_t frames;
    bool cut;            /* a torn or corrupt tail was cut */
    char cut_what[1024]; /* where and what, as words */
};

/* A seal found at open: an object formed of first..last. */
struct spool_seal {
    uint64_t first, last;
};

struct spool_io {
    /* Test hooks: the calls the spool uses on segment files (NULL: the real ones). Writes
     * go at an explicit offset: with O_DIRECT a group's partial last block is written
     * again, with more frames, by the next group. */
    ssize_t (*pwrite)(int fd, const void *buf, size_t len, off_t off);
    int (*fdatasync)(int fd);
    int (*open)(const char *path, int flags, mode_t mode); /* segments and the prepared file */
    int (*ftruncate)(int fd, off_t len); /* a delete's steps; the open's cut of a torn tail */
    int (*rename)(const char *from, const char *to); /* segment files in the directory */
    int (*fsync_dir)(const char *dir);               /* the directory's entries made durable */
    ssize_t (*pread)(int fd, void *buf, size_t len, off_t off); /* the open's scan, spool_read */
};

/* Tests set this to inject write and fdatasync failures into every spool opened after. */
extern const struct spool_io *spool_test_io;
/* Tests set this to write BEGIN and END frames without W, as spools written before it was
 * recorded: the open's older checks then run. */
extern bool spool_test_no_wmark;
/* Benchmarks set this to write every chunk's records, as before SKIP frames: what the disk
 * itself takes (bench-spool's peaks), with S3 not taking commits first. */
extern bool spool_test_no_skip;

struct spool_opts {
    const char *dir;
    uint64_t max_bytes, segment_bytes;
    uint32_t queue;            /* requests pushed and not yet freed, at most */
    uint32_t rec_offset;       /* where a ring record's object record header starts */
    const struct ring *ring;   /* whose batches CHUNK requests name */
    const _Atomic uint64_t *w; /* the S3-durable watermark: segments behind it go */
    int notify_fd;             /* written (8 bytes) after every write group, or -1 */
    void (*on_durable)(void *ctx, uint64_t l);    /* L moved (spool thread) */
    void (*on_error)(void *ctx, const char *why); /* the spool failed (spool thread, once) */
    void *ctx;
    const struct spool_io *io; /* NULL: real I/O */
};

struct spool;

/* Creates the directory if needed, locks it (a second process is refused with a message
 * naming the holder's pid), checks every segment and cuts a torn tail. The thread is not
 * started yet. Returns 0, S3C_EIO (err says which path and why; a read the scan could not
 * make cuts nothing), S3C_ENOMEM, or S3C_EFORMAT (a frame of a newer version: nothing cut). */
int spool_open(const struct spool_opts *o, struct spool **out, struct spool_scan *scan, char *err,
               size_t errlen);

/* The seals kept at open, in seq order (valid until spool_free). */
const struct spool_seal *spool_seals(const struct spool *sp, size_t *n);

/* Appends a whole object synchronously (before the thread starts): the run's control
 * record, so a replay can send it again byte for byte. Returns 0 or S3C_EIO. */
int spool_append_object(struct spool *sp, uint64_t seq, uint64_t epoch, const void *obj, size_t len,
                        char *err, size_t errlen);

/* Deletes every segment whose frames all lie at or below seq (at open, before the thread). */
void spool_trim(struct spool *sp, uint64_t seq);

int spool_start(struct spool *sp); /* starts the thread: 0 or S3C_EIO */
/* Stops the thread after the requests pushed so far are written (or the spool failed). */
void spool_stop(struct spool *sp);
void spool_free(struct spool *sp); /* stops first; unlocks the directory (NULL ok) */

/* ---- the persistence thread's side ----------------------------------------------- */

/* A free request slot to fill, or NULL when the queue is full. */
struct spool_req *spool_req_next(struct spool *sp);
void spool_push(struct spool *sp); /* publishes the request spool_req_next gave */
/* The oldest request not yet freed, or NULL (none pushed). *written: it is durable in the
 * spool; *taken: the writer is done with it (its ring memory and its slot), written or
 * not: a chunk W had passed when the writer got to it goes as a SKIP frame. */
struct spool_req *spool_req_oldest(struct spool *sp, bool *written, bool *taken);
void spool_req_free(struct spool *sp); /* frees the oldest */
/* Requests by index: every index in [freed, pushed) names a live request. */
uint64_t spool_req_pushed(const struct spool *sp);
uint64_t spool_req_freed(const struct spool *sp);
struct spool_req *spool_req_at(struct spool *sp, uint64_t idx);
/* Wakes the thread to delete what W passed (cheap; call when W moves). */
void spool_poke(struct spool *sp);

/* L: every seq <= L is fsync'd, its records or (a SKIP: W had passed it) its seq alone */
uint64_t spool_local_seq(const struct spool *sp);
bool spool_failed(const struct spool *sp);
/* After a failure: whether the writer is done reading the ring memory of the requests it
 * held (it may be inside a group when the flusher fails). Until then their ring space must
 * not go back, even acknowledged. The notify fd is written when it turns true. */
bool spool_writer_quiet(const struct spool *sp);
bool spool_full(const struct spool *sp); /* waiting for W to free room */
/* Whether segments are written with O_DIRECT (false after a filesystem refused it). */
bool spool_direct(const struct spool *sp);
uint64_t spool_bytes(const struct spool *sp);    /* in segment files now */
uint64_t spool_skipped(const struct spool *sp);  /* commits written as SKIP frames, ever */
uint64_t spool_syncs(const struct spool *sp);    /* fdatasyncs that published, ever */
const char *spool_error(const struct spool *sp); /* "" until it failed */

/* Finds the frame holding seq (a CHUNK or OBJECT frame whose first is seq). Returns 0,
 * S3C_EEND (no such frame) or S3C_EIO. */
int spool_find(struct spool *sp, uint64_t seq, struct spool_pos *pos, char *err, size_t errlen);

/* Reads the frame at *pos (header; payload into buf when buf is not NULL and it fits cap)
 * and moves *pos to the next frame. Reads only what the thread has made durable.
 * Returns 0, S3C_EEND (nothing durable there yet), S3C_ECORRUPT (a CRC or header check
 * failed: err names segment and offset) or S3C_EIO. */
int spool_read(struct spool *sp, struct spool_pos *pos, struct spool_frame *f, void *buf,
               size_t cap, char *err, size_t errlen);

#endif
