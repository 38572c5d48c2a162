/* S3's XML answers read with expat: the <Error> document (Code, Message, RequestId) and
 * ListObjectsV2's <ListBucketResult>. Never string search; never prints. Internal to the
 * transport (and its tests). */
#ifndef S3C_S3XML_H
#define S3C_S3XML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "transport/transport.h"

struct s3xml_error {
    char code[64];     /* "SlowDown"; truncated if longer */
    char message[512]; /* truncated if longer */
    char request_id[128];
};

/* Fills out from an S3 <Error> document. Returns true when xml parsed and its root is
 * <Error>; false (out all "") otherwise: not XML, truncated, or another document. */
bool s3xml_parse_error(const void *xml, size_t len, struct s3xml_error *out);

/* One ListObjectsV2 page. Owns its memory; reusable across parses (keeps capacity). */
struct s3xml_list {
    struct xport_list_entry *entries; /* nentries valid entries pointing into str */
    size_t nentries, cap;
    size_t *key_off, *etag_off; /* offsets into str while parsing */
    size_t token_off;           /* offset of NextContinuationToken, or SIZE_MAX */
    char *str;                  /* every string, NUL-terminated, back to back */
    size_t slen, scap;
    bool truncated;
    const char *next_token; /* into str, "" when none */
};

/* Parses a <ListBucketResult>. Returns 0, S3C_ECORRUPT (not a listing / bad XML) or
 * S3C_ENOMEM. On error the list is empty. */
int s3xml_parse_list(const void *xml, size_t len, struct s3xml_list *out);
void s3xml_list_free(struct s3xml_list *l); /* frees the buffers; the struct stays */

#endif
