/* Expat handlers for S3's <Error> and <ListBucketResult> documents (see s3xml.h). Text is
 * taken only from the elements we know, at the depth S3 puts them; anything else is
 * ignored. Never prints; never trusts a length it did not check. */
#include "transport/s3xml.h"

#include <expat.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "s3commit.h"

#define S3XML_TEXT_MAX 4096 /* longest text node kept (keys are <= 1024 bytes) */

enum { F_NONE, F_CODE, F_MESSAGE, F_REQID, F_KEY, F_SIZE, F_ETAG, F_TRUNC, F_TOKEN };

struct pstate {
    int depth;
    bool root_ok;
    bool in_contents; /* inside <Contents> at depth 2 */
    int field;        /* F_*: the element whose text is being collected */
    char text[S3XML_TEXT_MAX];
    size_t tlen;
    bool nomem;
    /* one of these is used */
    struct s3xml_error *err;
    struct s3xml_list *list;
    const char *root; /* expected root element */
    size_t cur_key, cur_etag;
    uint64_t cur_size;
    bool have_key;
};

static void s3xml_copy_str(char *dst, size_t cap, const char *src, size_t len)
{
    if (len >= cap)
        len = cap - 1;
    memcpy(dst, src, len);
    dst[len] = '\0';
}

/* Appends s to the list's string arena; returns its offset or (size_t)-1. */
static size_t s3xml_list_str(struct pstate *ps, const char *s, size_t len)
{
    struct s3xml_list *l = ps->list;
    if (l->slen + len + 1 > l->scap) {
        size_t cap = l->scap ? l->scap : 4096;
        while (cap < l->slen + len + 1)
            cap *= 2;
        char *n = realloc(l->str, cap);
        if (!n) {
            ps->nomem = true;
            return (size_t)-1;
        }
        l->str = n;
        l->scap = cap;
    }
    size_t off = l->slen;
    memcpy(l->str + off, s, len);
    l->str[off + len] = '\0';
    l->slen += len + 1;
    return off;
}

static bool s3xml_list_push(struct pstate *ps)
{
    struct s3xml_list *l = ps->list;
    if (l->nentries == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        struct xport_list_entry *e = realloc(l->entries, cap * sizeof(*e));
        if (!e)
            goto nomem;
        l->entries = e;
        size_t *k = realloc(l->key_off, cap * sizeof(*k));
        if (!k)
            goto nomem;
        l->key_off = k;
        size_t *t = realloc(l->etag_off, cap * sizeof(*t));
        if (!t)
            goto nomem;
        l->etag_off = t;
        l->cap = cap;
    }
    l->key_off[l->nentries] = ps->cur_key;
    l->etag_off[l->nentries] = ps->cur_etag;
    l->entries[l->nentries].size = ps->cur_size;
    l->nentries++;
    return true;
nomem:
    ps->nomem = true;
    return false;
}

static void XMLCALL s3xml_on_start(void *ud, const XML_Char *name, const XML_Char **attrs)
{
    struct pstate *ps = ud;
    (void)attrs;
    ps->depth++;
    ps->field = F_NONE;
    ps->tlen = 0;
    if (ps->depth == 1) {
        ps->root_ok = strcmp(name, ps->root) == 0;
        return;
    }
    if (!ps->root_ok)
        return;
    if (ps->err && ps->depth == 2) {
        if (strcmp(name, "Code") == 0)
            ps->field = F_CODE;
        else if (strcmp(name, "Message") == 0)
            ps->field = F_MESSAGE;
        else if (strcmp(name, "RequestId") == 0)
            ps->field = F_REQID;
        return;
    }
    if (!ps->list)
        return;
    if (ps->depth == 2) {
        if (strcmp(name, "Contents") == 0) {
            ps->in_contents = true;
            ps->have_key = false;
            ps->cur_key = ps->cur_etag = (size_t)-1;
            ps->cur_size = 0;
        } else if (strcmp(name, "IsTruncated") == 0) {
            ps->field = F_TRUNC;
        } else if (strcmp(name, "NextContinuationToken") == 0) {
            ps->field = F_TOKEN;
        }
    } else if (ps->depth == 3 && ps->in_contents) {
        if (strcmp(name, "Key") == 0)
            ps->field = F_KEY;
        else if (strcmp(name, "Size") == 0)
            ps->field = F_SIZE;
        else if (strcmp(name, "ETag") == 0)
            ps->field = F_ETAG;
    }
}

static void XMLCALL s3xml_on_text(void *ud, const XML_Char *s, int len)
{
    struct pstate *ps = ud;
    if (ps->field == F_NONE || len <= 0)
        return;
    size_t n = (size_t)len;
    if (ps->tlen + n > sizeof(ps->text) - 1)
        n = sizeof(ps->text) - 1 - ps->tlen;
    memcpy(ps->text + ps->tlen, s, n);
    ps->tlen += n;
}

static void XMLCALL s3xml_on_end(void *ud, const XML_Char *name)
{
    struct pstate *ps = ud;
    const char *t = ps->text;
    size_t n = ps->tlen;

    ps->text[n] = '\0';
    switch (ps->field) {
    case F_CODE:
        s3xml_copy_str(ps->err->code, sizeof(ps->err->code), t, n);
        break;
    case F_MESSAGE:
        s3xml_copy_str(ps->err->message, sizeof(ps->err->message), t, n);
        break;
    case F_REQID:
        s3xml_copy_str(ps->err->request_id, sizeof(ps->err->request_id), t, n);
        break;
    case F_KEY:
        ps->cur_key = s3xml_list_str(ps, t, n);
        ps->have_key = ps->cur_key != (size_t)-1;
        break;
    case F_ETAG:
        ps->cur_etag = s3xml_list_str(ps, t, n);
        break;
    case F_SIZE:
        ps->cur_size = strtoull(t, NULL, 10);
        break;
    case F_TRUNC:
        ps->list->truncated = strcmp(t, "true") == 0;
        break;
    case F_TOKEN:
        ps->list->token_off = s3xml_list_str(ps, t, n);
        break;
    default:
        break;
    }
    ps->field = F_NONE;
    ps->tlen = 0;
    if (ps->list && ps->depth == 2 && ps->in_contents && strcmp(name, "Contents") == 0) {
        ps->in_contents = false;
        if (ps->have_key)
            s3xml_list_push(ps);
    }
    ps->depth--;
}

static bool s3xml_run(struct pstate *ps, const void *xml, size_t len)
{
    XML_Parser p = XML_ParserCreate("UTF-8");
    if (!p) {
        ps->nomem = true;
        return false;
    }
    XML_SetUserData(p, ps);
    XML_SetElementHandler(p, s3xml_on_start, s3xml_on_end);
    XML_SetCharacterDataHandler(p, s3xml_on_text);
    bool ok = len <= (size_t)INT32_MAX && XML_Parse(p, xml, (int)len, 1) == XML_STATUS_OK &&
              ps->root_ok && !ps->nomem;
    XML_ParserFree(p);
    return ok;
}

bool s3xml_parse_error(const void *xml, size_t len, struct s3xml_error *out)
{
    struct pstate ps = {.err = out, .root = "Error"};
    memset(out, 0, sizeof(*out));
    if (!xml || len == 0)
        return false;
    if (!s3xml_run(&ps, xml, len)) {
        memset(out, 0, sizeof(*out));
        return false;
    }
    return true;
}

int s3xml_parse_list(const void *xml, size_t len, struct s3xml_list *out)
{
    struct pstate ps = {.list = out, .root = "ListBucketResult"};
    out->nentries = 0;
    out->slen = 0;
    out->truncated = false;
    out->next_token = "";
    out->token_off = SIZE_MAX;
    if (!xml || len == 0 || !s3xml_run(&ps, xml, len)) {
        out->nentries = 0;
        out->truncated = false;
        out->next_token = "";
        return ps.nomem ? S3C_ENOMEM : S3C_ECORRUPT;
    }
    /* The arena may have moved while growing: resolve offsets only now. */
    for (size_t i = 0; i < out->nentries; i++) {
        out->entries[i].key = out->str + out->key_off[i];
        out->entries[i].etag = out->etag_off[i] == (size_t)-1 ? "" : out->str + out->etag_off[i];
    }
    out->next_token = out->token_off == SIZE_MAX ? "" : out->str + out->token_off;
    return 0;
}

void s3xml_list_free(struct s3xml_list *l)
{
    free(l->entries);
    free(l->key_off);
    free(l->etag_off);
    free(l->str);
    memset(l, 0, sizeof(*l));
}
