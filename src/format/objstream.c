/* Checking an object while it arrives (obj_stream in objfmt.h): record CRCs and the object
 * CRC computed piece by piece over bytes just received, still in cache. It only gathers
 * evidence; anything it does not follow leaves the verdict to the full obj_decode. */
#include <string.h>

#include "common/crc32c.h"
#include "format/objfmt.h"

static uint32_t objs_get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t objs_get64(const unsigned char *p)
{
    return (uint64_t)objs_get32(p) | (uint64_t)objs_get32(p + 4) << 32;
}

void obj_stream_init(struct obj_stream *s)
{
    memset(s, 0, sizeof(*s));
}

/* Closes the open payload (all of it at base + pay_end - len): its CRC checked and joined. */
static void objs_close_payload(struct obj_stream *s, const unsigned char *base)
{
    uint32_t len = (uint32_t)(s->pay_end - s->covered);
    if (s->pay != s->pay_want)
        s->crc_bad = true;
    s->whole = obj_crc_join(s->whole, base + s->covered, len, s->pay, &s->join);
    s->covered = s->at = s->pay_end;
    s->pay_open = false;
}

void obj_stream_feed(struct obj_stream *s, const unsigned char *base, uint64_t off,
                     const unsigned char *piece, size_t n)
{
    uint64_t end = off + n;
    if (s->off_track)
        return;
    if (off != s->fed) {
        s->off_track = true;
        return;
    }
    while (s->fed < end) {
        if (!s->started) {
            if (end < OBJ_HEADER_BYTES)
                break;
            uint16_t flags = (uint16_t)(base[10] | base[11] << 8);
            if (memcmp(base, OBJ_MAGIC, 8) != 0 || (flags & OBJ_FLAG_ZSTD)) {
                s->off_track = true; /* obj_decode or obj_inflate says what it is */
                return;
            }
            s->left = objs_get32(base + 12);
            s->next_seq = objs_get64(base + 16);
            s->whole = crc32c_update(0, base, OBJ_HEADER_BYTES);
            s->covered = s->at = s->fed = OBJ_HEADER_BYTES;
            s->started = true;
        } else if (s->pay_open) {
            uint64_t stop = end < s->pay_end ? end : s->pay_end;
            s->pay = crc32c_update(s->pay, piece + (s->fed - off), (size_t)(stop - s->fed));
            s->fed = stop;
            if (stop == s->pay_end)
                objs_close_payload(s, base);
        } else if (s->left > 0) {
            if (end < s->at + OBJ_RECORD_HEADER_BYTES)
                break; /* the record header is not all here yet */
            const unsigned char *h = base + s->at;
            if (objs_get64(h + 8) != s->next_seq++) {
                s->off_track = true; /* not dense: obj_decode names the record */
                return;
            }
            s->whole = crc32c_update(s->whole, h, OBJ_RECORD_HEADER_BYTES);
            s->covered = s->fed = s->at + OBJ_RECORD_HEADER_BYTES;
            s->pay_end = s->fed + objs_get32(h);
            s->pay_want = objs_get32(h + 4);
            s->pay = 0;
            s->pay_open = true;
            s->left--;
            if (s->pay_end == s->fed)
                objs_close_payload(s, base); /* an empty payload */
        } else {
            break; /* the trailer (and whatever follows): obj_stream_verified looks */
        }
    }
    s->fed = end;
}

bool obj_stream_verified(const struct obj_stream *s, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    return s->started && !s->off_track && !s->crc_bad && !s->pay_open && s->left == 0 &&
           s->fed == len && len >= OBJ_HEADER_BYTES + OBJ_TRAILER_BYTES &&
           s->covered == len - OBJ_TRAILER_BYTES &&
           memcmp(p + len - 4, OBJ_TRAILER_MAGIC, 4) == 0 &&
           objs_get32(p + len - OBJ_TRAILER_BYTES) == s->whole;
}
