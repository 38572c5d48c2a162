/* Length-prefixed frame reader (see frame.h). Bytes move once into one growing buffer
 * bounded by max_frame plus one read; it never allocates per frame. */
#include "frame.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FRAME_READ_CHUNK 65536

int frame_reader_init(struct frame_reader *r, uint64_t max_frame)
{
    memset(r, 0, sizeof(*r));
    r->max_frame = max_frame;
    r->cap = FRAME_READ_CHUNK;
    r->buf = malloc(r->cap);
    return r->buf ? 0 : -ENOMEM;
}

void frame_reader_free(struct frame_reader *r)
{
    free(r->buf);
    r->buf = NULL;
}

/* Makes room for at least want more bytes after len: slides unread bytes to the front,
 * then grows. */
static int frame_reserve(struct frame_reader *r, size_t want)
{
    if (r->pos > 0) {
        memmove(r->buf, r->buf + r->pos, r->len - r->pos);
        r->len -= r->pos;
        r->pos = 0;
    }
    if (r->cap - r->len >= want)
        return 0;
    size_t cap = r->cap;
    while (cap - r->len < want)
        cap *= 2;
    unsigned char *nb = realloc(r->buf, cap);
    if (!nb)
        return -ENOMEM;
    r->buf = nb;
    r->cap = cap;
    return 0;
}

static uint32_t frame_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* How many bytes the frame at pos needs in the buffer (header included), so a fill reads
 * at least up to its end and never grows past max_frame + header + one chunk. */
static size_t frame_want(const struct frame_reader *r)
{
    size_t have = r->len - r->pos;
    if (have >= FRAME_HEADER_BYTES) {
        uint32_t n = frame_le32(r->buf + r->pos);
        if (n <= r->max_frame && (size_t)n + FRAME_HEADER_BYTES > have)
            return (size_t)n + FRAME_HEADER_BYTES - have;
    }
    return FRAME_READ_CHUNK;
}

ssize_t frame_reader_fill(struct frame_reader *r, int fd)
{
    size_t want = frame_want(r);
    if (want < FRAME_READ_CHUNK)
        want = FRAME_READ_CHUNK;
    if (frame_reserve(r, want) < 0)
        return -ENOMEM;
    for (;;) {
        ssize_t n = read(fd, r->buf + r->len, r->cap - r->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            r->eof = true;
        r->len += (size_t)n;
        return n;
    }
}

int frame_reader_push(struct frame_reader *r, const void *data, size_t len)
{
    if (frame_reserve(r, len) < 0)
        return -ENOMEM;
    memcpy(r->buf + r->len, data, len);
    r->len += len;
    return 0;
}

enum frame_status frame_next(struct frame_reader *r, struct frame *f)
{
    size_t have = r->len - r->pos;
    if (have < FRAME_HEADER_BYTES)
        return FRAME_NEED_MORE;
    uint32_t n = frame_le32(r->buf + r->pos);
    f->len = n;
    f->offset = r->offset;
    if (n > r->max_frame)
        return FRAME_TOO_BIG;
    if (have - FRAME_HEADER_BYTES < n)
        return FRAME_NEED_MORE;
    f->data = r->buf + r->pos + FRAME_HEADER_BYTES;
    r->pos += FRAME_HEADER_BYTES + n;
    r->offset += FRAME_HEADER_BYTES + (uint64_t)n;
    return FRAME_OK;
}

bool frame_reader_truncated(const struct frame_reader *r, char *msg, size_t msglen)
{
    size_t have = r->len - r->pos;
    if (!r->eof || have == 0)
        return false;
    if (have < FRAME_HEADER_BYTES)
        snprintf(msg, msglen,
                 "truncated frame at byte offset %" PRIu64
                 ": the stream ended after %zu of the 4 length bytes",
                 r->offset, have);
    else
        snprintf(msg, msglen,
                 "truncated frame at byte offset %" PRIu64 ": its length prefix says %" PRIu32
                 " bytes but only %zu arrived before the end",
                 r->offset, frame_le32(r->buf + r->pos), have - FRAME_HEADER_BYTES);
    return true;
}
