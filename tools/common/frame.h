/* Reads length-prefixed commits (u32 little-endian length, then the bytes) from a byte
 * stream: stdin of `s3commit run` or one client of its Unix socket. Buffers only; it never
 * submits, prints or decides what an error means to the program. */
#ifndef S3C_TOOL_FRAME_H
#define S3C_TOOL_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define FRAME_HEADER_BYTES 4

struct frame_reader {
    unsigned char *buf; /* owned; bytes [pos, len) not yet handed out */
    size_t cap, len, pos;
    uint64_t offset;    /* stream offset of buf[pos] */
    uint64_t max_frame; /* a frame longer than this is an error */
    bool eof;           /* the stream ended */
};

enum frame_status {
    FRAME_OK = 0,    /* a whole frame is in *f */
    FRAME_NEED_MORE, /* fill again (or, at EOF, see frame_reader_truncated) */
    FRAME_TOO_BIG,   /* the next frame's length is over max_frame; *f says where */
};

struct frame {
    const void *data; /* valid until the next frame_reader_fill() */
    uint32_t len;
    uint64_t offset; /* stream offset of the frame's length prefix */
};

/* Returns 0 or -ENOMEM. */
int frame_reader_init(struct frame_reader *r, uint64_t max_frame);
void frame_reader_free(struct frame_reader *r);

/* One read() from fd into the buffer. Returns the bytes read (> 0), 0 at EOF (r->eof is
 * then set) or -errno (-EAGAIN for a non-blocking fd with nothing to read). */
ssize_t frame_reader_fill(struct frame_reader *r, int fd);

/* Appends bytes directly (for tests and callers that read themselves). -ENOMEM or 0. */
int frame_reader_push(struct frame_reader *r, const void *data, size_t len);

/* The next whole frame, if one is buffered. On FRAME_TOO_BIG, f->len and f->offset
 * describe the offending frame and the reader must not be used further. */
enum frame_status frame_next(struct frame_reader *r, struct frame *f);

/* True at EOF when bytes of an unfinished frame remain; fills a one-line description
 * naming the byte offset, what the prefix announced and how much arrived. */
bool frame_reader_truncated(const struct frame_reader *r, char *msg, size_t msglen);

#endif
