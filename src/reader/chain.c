/* The chain rules of the log (../shared/DESIGN.md, docs/format.md): which object comes
 * next, what ends the chain (a gap, a missing object, an orphan), and the records of the
 * object taken, each CRC-checked. Nothing past the chain's end is ever returned. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "reader/reader_int.h"

/* Looks at the lowest key: off the chain (skipped), the next object (taken when read),
 * or a gap / an orphan (the end of the chain). */
enum rd_step rd_next_object(struct s3c_reader *r)
{
    char why[256];
    for (;;) {
        if (r->err)
            return RD_ERROR;
        if (r->nslots == 0) {
            if (r->list_wire || r->list_need || (r->list_more && r->page.pos == r->page.n))
                return RD_WAIT;
            if (r->page.pos < r->page.n)
                return RD_WAIT; /* top-up will make slots */
            return RD_END;
        }
        struct rslot *s = r->slots[0];
        if (s->first <= r->last) { /* inside the range of an object on the chain */
            r->st.orphans_skipped++;
            rd_drop_head(r);
            continue;
        }
        if (s->first != r->last + 1)
            return RD_END; /* a gap: nothing at last + 1 */
        if (s->state == RS_WIRE || s->state == RS_IDLE)
            return RD_WAIT;
        if (s->state == RS_MISSING) {
            rd_drop_head(r); /* deleted since the listing */
            return RD_END;
        }
        if (s->state == RS_FAILED) {
            rd_fail(r, S3C_ES3, "%s: %s", s->key, s->error);
            return RD_ERROR;
        }
        struct obj_header h;
        bool inflated = false;
        if (s->len >= OBJ_HEADER_BYTES && (s->body[10] | s->body[11] << 8) & OBJ_FLAG_ZSTD) {
            unsigned char *plain;
            size_t plen;
            int zrc = obj_inflate(s->body, s->len, &plain, &plen, why, sizeof(why));
            inflated = true;
            if (zrc < 0) {
                rd_fail(r, zrc, "%s: %s", s->key, why);
                return RD_ERROR;
            }
            rd_buf_done(r, s->body, s->cap);
            s->body = plain;
            s->len = plen;
            s->cap = plen;
        }
        /* the CRCs as the stream computed them when the bytes landed (obj_check) */
        if (obj_check(s->body, s->len, inflated ? NULL : &s->st, &h, why, sizeof(why)) != 0) {
            rd_fail(r, S3C_ECORRUPT, "%s: %s", s->key, why);
            return RD_ERROR;
        }
        if (h.first_seq != s->first) {
            rd_fail(r, S3C_ECORRUPT, "%s: the header starts at seq %" PRIu64, s->key, h.first_seq);
            return RD_ERROR;
        }
        if (h.epoch < r->floor)
            return RD_END; /* an orphan ends the chain (its writer was fenced) */
        if (h.flags & OBJ_FLAG_EPOCH_START)
            r->floor = h.epoch;
        rd_buf_done(r, r->cur, r->cur_cap);
        r->cur = s->body;
        r->cur_len = s->len;
        r->cur_cap = s->cap;
        s->body = NULL;
        r->cur_off = OBJ_HEADER_BYTES;
        r->cur_left = h.count;
        r->cur_h = h;
        r->last = h.last_seq;
        if (r->floor_at_w && r->last >= r->manifest_w) {
            /* Entered by a seek: below W every object at last + 1 is the chain's, and at
             * W the floor is the manifest's (the last EPOCH_START at or before it; a
             * manifest without it: this object's epoch, as an entry past W takes). */
            uint64_t at_w = r->manifest_start_epoch ? r->manifest_start_epoch : h.epoch;
            r->floor_at_w = false;
            if (r->floor < at_w)
                r->floor = at_w;
        }
        r->st.objects++;
        r->st.last_seq = r->last;
        rd_drop_head(r);
        return RD_GOT;
    }
}

static uint32_t rd_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The next record of the current object (checked whole by obj_check already). */
bool rd_take_record(struct s3c_reader *r, struct s3c_record *rec)
{
    while (r->cur_left > 0) {
        const unsigned char *p = r->cur + r->cur_off;
        uint32_t len = rd_le32(p);
        uint64_t seq = (uint64_t)rd_le32(p + 8) | (uint64_t)rd_le32(p + 12) << 32;
        r->cur_off += OBJ_RECORD_HEADER_BYTES + len;
        r->cur_left--;
        if (seq < r->from)
            continue;
        rec->seq = seq;
        rec->data = p + OBJ_RECORD_HEADER_BYTES;
        rec->len = len;
        rec->control = (r->cur_h.flags & OBJ_FLAG_EPOCH_START) != 0;
        rec->epoch = r->cur_h.epoch;
        return true;
    }
    return false;
}
