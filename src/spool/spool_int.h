/* The spool's insides, shared by spool.c (appending, reading) and scan.c (open, lock,
 * checking at open, free). */
#ifndef S3C_SPOOL_INT_H
#define S3C_SPOOL_INT_H

#include <pthread.h>
#include <sys/uio.h>

#include "spool/spool.h"

#define SPOOL_MAGIC 0x50533353u    /* "S3SP" */
#define SPOOL_BLOCK 4096u          /* O_DIRECT: buffer, offset and length aligned to this */
#define SPOOL_WBUF (8u << 20)      /* the writer's buffer: frames are copied here, then written */
#define SPOOL_WBUF_POST (4u << 20) /* a group this far gathered is written and posted */
#define SPOOL_HANDOFF_BYTES (1u << 20)      /* a write this large goes to the submitter thread */
#define SPOOL_INLINE_SYNC_BYTES (64u << 10) /* a group this small, the writer syncs itself */
#define SPOOL_SEAL_LAG_MS 10        /* a group of seals alone waits this long for a data group */
#define SPOOL_UNLINK_QUEUE 64       /* segments waiting for the preparer to unlink them */
#define SPOOL_DEL_EXT ".del"        /* a segment being deleted: out of the scan's sight */
#define SPOOL_REC_EXT ".rec"        /* a segment W passed, kept to be written over */
#define SPOOL_RECYCLE_MAX 2         /* recycled segments kept, at most */
#define SPOOL_DEL_STEP (4u << 20)   /* a deleted segment is cut down this much at a time */
#define SPOOL_DEL_PAUSE_NS 2000000u /* between two cuts: the writer's I/O goes in between */
#define SPOOL_PREP_NAME "prepared.tmp"
#define SPOOL_PREP_CHUNK (1u << 20)   /* the zeros buffer (and the scan's read size) */
#define SPOOL_PREP_WRITE (128u << 10) /* zeros per write when preparing a segment */
#define SPOOL_PREP_PACE (16u << 20)   /* bytes/s of zeros at most: the disk is the writer's too */
#define SPOOL_PREP_MAX (8u << 20)     /* a prepared segment's zeros, at most */
#define SPOOL_PREP_RATE (8u << 20)    /* prepare while the spool is written slower (bytes/s) */
#define SPOOL_PREP_WINDOW_MS 400      /* over which the write rate is measured */

struct spool_seg {
    uint64_t seg;   /* its name: the first data seq written to it */
    uint64_t last;  /* the last data seq in it (seg - 1: none) */
    uint64_t bytes; /* written */
    bool tagged;    /* begins with a BEGIN frame (this format): may be recycled */
};

struct spool {
    struct spool_opts o;
    char dir[512];
    uint64_t max_bytes, segment_bytes;
    struct spool_io io;
    int lock_fd;

    /* The request queue: the persistence thread fills and pushes, the thread writes, the
     * persistence thread frees in order. */
    struct spool_req *q;
    uint32_t qcap;
    _Atomic uint64_t pushed, written;
    _Atomic uint64_t taken; /* requests the writer is done reading (written or not yet) */
    uint64_t freed;         /* the persistence thread's */

    /* Thread control: the writer (spool_main), the flusher (spool_flush_main) and the
     * preparer (spool_prep_main). */
    pthread_t thread, flusher, preparer, submitter;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    _Atomic bool sleeping; /* the thread may be waiting: a push signals */
    bool stop, poked;      /* under mu */

    /* The writer's state. */
    uint64_t wnext;    /* requests written (not yet durable: the flusher says when) */
    uint64_t seal_due; /* seals gathered alone are written out by then (s3c__now_ns; 0: none) */
    int fd;            /* the open segment, or -1 */
    uint64_t cur_seg, cur_bytes;
    uint64_t next_seq;     /* the next data seq: a new segment's name */
    bool dir_dirty;        /* a segment was created since the last directory fsync */
    bool cur_prepared;     /* the open segment was prepared or recycled: writes overwrite */
    uint64_t cur_prep_end; /* up to here (its size when it was taken) */
    uint32_t cur_tag;      /* the open segment's tag (its BEGIN frame's) */
    uint64_t tag_state;    /* tags come from here (seeded from getrandom at open) */
    uint64_t deleted_w;
    /* The writer copies frames into wbuf, which holds the segment's bytes from wbase (a
     * multiple of SPOOL_BLOCK with O_DIRECT) on, wfill of them; it writes whole blocks,
     * the last one padded with zeros, and keeps that partial block to write again with
     * the next group's frames after it (docs/spool.md). */
    unsigned char *wbuf; /* wbufs[wcur]: the one being filled */
    uint64_t wbase;
    size_t wfill;
    unsigned char *wbufs[2];
    int wcur;
    _Atomic bool direct; /* O_DIRECT: off for good once the filesystem refused it */
    atomic_flag direct_said;

    /* The flusher fdatasyncs what the writer has written (group N) while the writer writes
     * group N+1: the writer posts the end of what it wrote after every write, the flusher
     * takes the latest post. Under fmu. */
    pthread_mutex_t fmu;
    pthread_cond_t fcv;
    struct spool_mark {
        uint64_t seg, off; /* written up to here */
        uint64_t l;        /* the last data seq written */
        uint64_t written;  /* requests written */
        int fd;            /* the segment to fdatasync */
        bool dir;          /* a segment was created: fsync the directory too */
    } mark;
    bool mark_new; /* posted since the flusher took it */
    bool fbusy;    /* the flusher is syncing what it took */
    bool fstop;
    /* Writes of SPOOL_HANDOFF_BYTES and up: the writer hands the filled buffer to the
     * submitter thread and fills the other one meanwhile (the copy into a buffer overlaps the
     * device's write of the other). The submitter writes them in order and posts each to the
     * flusher. The writer writes a smaller group itself, once no job is left (a group's
     * partial last block is written again by the next write: writes stay in order). Under
     * fmu; the submitter waits on scv. */
    struct spool_job {
        unsigned char *buf;
        size_t len;
        uint64_t off;           /* in the segment */
        bool post;              /* ends whole frames: post mark to the flusher after it */
        struct spool_mark mark; /* fd and seg are the segment's in any case */
    } jobs[2];
    int njobs; /* jobs[0] is being written while sbusy */
    bool sbusy;
    bool sstop;
    pthread_cond_t scv;
    atomic_flag fail_once;

    /* The preparer keeps one zero-filled, fdatasync'd segment file (SPOOL_PREP_NAME)
     * ready: data written over it changes no file metadata, so its fdatasync commits no
     * journal. The writer renames it into place at a rollover. Under pmu. */
    pthread_mutex_t pmu;
    pthread_cond_t pcv;
    _Atomic bool prep_ready; /* the file is ready (the writer takes it) */
    bool prep_failed;        /* the last try failed: wait for the next rollover */
    _Atomic bool pstop;
    _Atomic uint64_t appended; /* bytes ever written by the writer: its rate */
    unsigned char *zeros;      /* SPOOL_PREP_CHUNK zero bytes */
    uint64_t prep_bytes; /* a prepared segment's size: segment_bytes, at most SPOOL_PREP_MAX */
    struct spool_unlink {
        uint64_t seg, bytes;        /* bytes: its frames, still in `bytes` until it is gone */
        bool tagged;                /* may be recycled */
    } unlink_q[SPOOL_UNLINK_QUEUE]; /* segments W passed, for the preparer to delete */
    int nunlink;
    /* Segments W passed, renamed <old name>.rec (durably), in the order they came: the writer
     * renames the newest into place at a rollover and writes over its blocks (docs/spool.md,
     * "Recycled segments"). */
    uint64_t recycled[SPOOL_RECYCLE_MAX];
    _Atomic int nrecycled;

    /* Published after each group. */
    pthread_mutex_t pubmu;
    uint64_t dseg, doff; /* everything before (dseg, doff) is durable */
    _Atomic uint64_t l;
    _Atomic int failed, full;
    _Atomic int wquiet; /* failed, and the writer has stopped reading requests' ring memory */
    _Atomic uint64_t bytes, groups;
    _Atomic uint64_t skipped; /* commits written as SKIP frames */
    char error[1024];

    /* Segments (the thread changes the list; readers look it up). */
    pthread_mutex_t segmu;
    struct spool_seg *segs;
    size_t nsegs, segcap;

    /* Reading (the persistence thread): one cached descriptor, good while no segment has
     * left the list since it was opened (seg_gen: a recycled file is another segment's). */
    int rfd;
    uint64_t rseg, rgen;
    _Atomic uint64_t seg_gen;

    /* Seals found at open. */
    struct spool_seal *seals;
    size_t nseals;
};

void spool_frame_encode(const struct spool_frame *f, unsigned char h[SPOOL_FRAME_HEADER]);
void spool_frame_seal(unsigned char h[SPOOL_FRAME_HEADER], uint32_t crc);
uint32_t spool_frame_head_crc(const unsigned char h[SPOOL_FRAME_HEADER]);
int spool_frame_decode(const unsigned char h[SPOOL_FRAME_HEADER], struct spool_frame *f,
                       uint32_t *crc);
void spool_seg_path(const struct spool *sp, uint64_t seg, char *out, size_t cap);
void spool_del_path(const struct spool *sp, uint64_t seg, char *out, size_t cap);
void spool_rec_path(const struct spool *sp, uint64_t seg, char *out, size_t cap);
struct spool_seg *spool_seg_find(struct spool *sp, uint64_t seg);
int spool_seg_add(struct spool *sp, uint64_t seg);
void spool_io_defaults(struct spool_io *io);
bool spool_frame_check(const unsigned char h[SPOOL_FRAME_HEADER], const struct spool_frame *f,
                       uint32_t crc, const unsigned char *p);

#endif
