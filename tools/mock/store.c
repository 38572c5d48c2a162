/* The mock's buckets and objects: in memory, on disk (temp file, fsync, rename, fsync dir,
 * so a killed server never shows a torn object), or nowhere (--store none). Keys are kept
 * sorted by bytes for listing. It must never expose a half-written object. */
#include "mock.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct obj {
    char *key;
    size_t klen;
    struct blob *body; /* memory mode; NULL on disk */
    struct objmeta meta;
};

struct bucket {
    char name[64];
    int64_t created_ms;
    pthread_rwlock_t lock; /* guards objs */
    struct obj **objs;     /* sorted by key bytes */
    size_t n, cap;
};

struct store {
    enum store_mode mode;
    char *dir;
    pthread_rwlock_t lock; /* guards the bucket array (not the buckets' contents) */
    struct bucket **b;
    size_t nb;
};

#define DISK_MAGIC "S3CMOCK1"

struct disk_hdr {
    char magic[8];
    uint32_t klen;
    uint32_t reserved;
    uint64_t size;
    int64_t mtime_ms;
    char etag[32];
};

struct blob *blob_new(size_t len)
{
    struct blob *b = malloc(sizeof(*b) + len + 1);
    if (!b)
        return NULL;
    atomic_init(&b->refs, 1);
    b->len = len;
    return b;
}

struct blob *blob_ref(struct blob *b)
{
    if (b)
        atomic_fetch_add(&b->refs, 1);
    return b;
}

void blob_unref(struct blob *b)
{
    if (b && atomic_fetch_sub(&b->refs, 1) == 1)
        free(b);
}

static int mock_key_cmp(const char *a, size_t an, const char *b, size_t bn)
{
    int c = memcmp(a, b, an < bn ? an : bn);
    if (c)
        return c;
    return an < bn ? -1 : an > bn ? 1 : 0;
}

/* First index whose key is >= (key) (or > when strict). */
static size_t mock_lower_bound(const struct bucket *b, const char *key, size_t klen, bool strict)
{
    size_t lo = 0, hi = b->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = mock_key_cmp(b->objs[mid]->key, b->objs[mid]->klen, key, klen);
        if (c < 0 || (strict && c == 0))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static struct obj *mock_find(const struct bucket *b, const char *key, size_t klen, size_t *pos)
{
    size_t i;
    /* keys usually arrive in order: check the end first */
    if (b->n && mock_key_cmp(b->objs[b->n - 1]->key, b->objs[b->n - 1]->klen, key, klen) < 0)
        i = b->n;
    else
        i = mock_lower_bound(b, key, klen, false);
    if (pos)
        *pos = i;
    if (i < b->n && mock_key_cmp(b->objs[i]->key, b->objs[i]->klen, key, klen) == 0)
        return b->objs[i];
    return NULL;
}

static void mock_obj_free(struct obj *o)
{
    if (!o)
        return;
    blob_unref(o->body);
    free(o->key);
    free(o);
}

static int64_t mock_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool mock_valid_bucket_name(const char *n)
{
    size_t len = strlen(n);
    if (len < 3 || len > 63)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = n[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.'))
            return false;
    }
    return n[0] != '-' && n[0] != '.' && n[len - 1] != '-' && n[len - 1] != '.';
}

/* ---- disk helpers ---- */

static int mock_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

static void mock_obj_path(const struct store *s, const char *bucket, const char *key, size_t klen,
                          char *out, size_t outlen)
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    char hex[65];
    EVP_Digest(key, klen, md, &mdlen, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    snprintf(out, outlen, "%s/%s/%s.obj", s->dir, bucket, hex);
}

static int mock_write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

static int mock_disk_put(struct store *s, const char *bucket, const char *key, size_t klen,
                         const struct blob *body, const struct objmeta *m)
{
    char path[4096], tmp[4200], dir[4096];
    static atomic_uint_fast64_t tmp_seq;
    struct disk_hdr h;
    int rc;

    mock_obj_path(s, bucket, key, klen, path, sizeof(path));
    snprintf(dir, sizeof(dir), "%s/%s", s->dir, bucket);
    snprintf(tmp, sizeof(tmp), "%s/.tmp-%d-%llu", dir, (int)getpid(),
             (unsigned long long)atomic_fetch_add(&tmp_seq, 1));
    memset(&h, 0, sizeof(h));
    memcpy(h.magic, DISK_MAGIC, 8);
    h.klen = (uint32_t)klen;
    h.size = m->size;
    h.mtime_ms = m->mtime_ms;
    memcpy(h.etag, m->etag, 32);

    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return -EIO;
    if ((rc = mock_write_all(fd, &h, sizeof(h))) < 0 || (rc = mock_write_all(fd, key, klen)) < 0 ||
        (body && (rc = mock_write_all(fd, body->data, body->len)) < 0) || fsync(fd) < 0) {
        close(fd);
        unlink(tmp);
        return -EIO;
    }
    close(fd);
    if (rename(tmp, path) < 0) {
        unlink(tmp);
        return -EIO;
    }
    return mock_fsync_dir(dir) < 0 ? -EIO : 0;
}

/* Reads an object file: header, key and (when body) the body. Returns 0 or -EIO. */
static int mock_disk_read(const char *path, struct disk_hdr *h, char **key, struct blob **body)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    int rc = -EIO;
    if (fd < 0)
        return errno == ENOENT ? -ENOENT : -EIO;
    if (fstat(fd, &st) < 0 || pread(fd, h, sizeof(*h), 0) != (ssize_t)sizeof(*h) ||
        memcmp(h->magic, DISK_MAGIC, 8) != 0 || h->klen > 4096 ||
        (uint64_t)st.st_size != sizeof(*h) + h->klen + h->size)
        goto out_close;
    if (key) {
        *key = malloc(h->klen + 1);
        if (!*key || pread(fd, *key, h->klen, sizeof(*h)) != (ssize_t)h->klen) {
            free(*key);
            *key = NULL;
            goto out_close;
        }
        (*key)[h->klen] = '\0';
    }
    if (body) {
        struct blob *b = blob_new(h->size);
        size_t got = 0;
        if (!b)
            goto out_close;
        while (got < h->size) {
            ssize_t r =
                pread(fd, b->data + got, h->size - got, (off_t)(sizeof(*h) + h->klen + got));
            if (r <= 0) {
                blob_unref(b);
                goto out_close;
            }
            got += (size_t)r;
        }
        *body = b;
    }
    rc = 0;
out_close:
    close(fd);
    return rc;
}

/* ---- buckets ---- */

static struct bucket *mock_bucket_find_locked(struct store *s, const char *name)
{
    for (size_t i = 0; i < s->nb; i++)
        if (strcmp(s->b[i]->name, name) == 0)
            return s->b[i];
    return NULL;
}

static struct bucket *mock_bucket_add_locked(struct store *s, const char *name, int64_t created)
{
    struct bucket *b = calloc(1, sizeof(*b));
    struct bucket **nb = realloc(s->b, (s->nb + 1) * sizeof(*nb));
    if (!b || !nb) {
        free(b);
        if (nb)
            s->b = nb;
        return NULL;
    }
    s->b = nb;
    snprintf(b->name, sizeof(b->name), "%s", name);
    b->created_ms = created;
    pthread_rwlock_init(&b->lock, NULL);
    size_t i = s->nb;
    while (i > 0 && strcmp(s->b[i - 1]->name, name) > 0) {
        s->b[i] = s->b[i - 1];
        i--;
    }
    s->b[i] = b;
    s->nb++;
    return b;
}

static int mock_insert_obj(struct bucket *b, struct obj *o, size_t pos)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        struct obj **n = realloc(b->objs, cap * sizeof(*n));
        if (!n)
            return -ENOMEM;
        b->objs = n;
        b->cap = cap;
    }
    memmove(b->objs + pos + 1, b->objs + pos, (b->n - pos) * sizeof(*b->objs));
    b->objs[pos] = o;
    b->n++;
    return 0;
}

static int mock_load_bucket(struct store *s, struct bucket *b)
{
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/%s", s->dir, b->name);
    DIR *d = opendir(dir);
    struct dirent *e;
    if (!d)
        return -EIO;
    while ((e = readdir(d))) {
        char path[4096 + 300];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (strncmp(e->d_name, ".tmp-", 5) == 0) { /* a write that never finished */
            unlink(path);
            continue;
        }
        size_t nl = strlen(e->d_name);
        if (nl < 5 || strcmp(e->d_name + nl - 4, ".obj") != 0)
            continue;
        struct disk_hdr h;
        char *key = NULL;
        if (mock_disk_read(path, &h, &key, NULL) < 0) {
            fprintf(stderr, "s3commit-mock: skipping unreadable object file %s\n", path);
            continue;
        }
        struct obj *o = calloc(1, sizeof(*o));
        size_t pos;
        if (!o) {
            free(key);
            break;
        }
        o->key = key;
        o->klen = h.klen;
        o->meta.size = h.size;
        o->meta.mtime_ms = h.mtime_ms;
        memcpy(o->meta.etag, h.etag, 32);
        o->meta.etag[32] = '\0';
        if (mock_find(b, key, h.klen, &pos) || mock_insert_obj(b, o, pos) < 0)
            mock_obj_free(o);
    }
    closedir(d);
    return 0;
}

struct store *store_open(enum store_mode mode, const char *data_dir, char *err, size_t errlen)
{
    struct store *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->mode = mode;
    pthread_rwlock_init(&s->lock, NULL);
    if (mode != STORE_DISK)
        return s;
    s->dir = strdup(data_dir);
    if (mkdir(data_dir, 0755) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "--data-dir %s: %s (give a directory the mock can create)", data_dir,
                 strerror(errno));
        goto out_free;
    }
    DIR *d = opendir(data_dir);
    if (!d) {
        snprintf(err, errlen, "--data-dir %s: %s", data_dir, strerror(errno));
        goto out_free;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        char path[4096];
        struct stat st;
        if (!mock_valid_bucket_name(e->d_name))
            continue;
        snprintf(path, sizeof(path), "%s/%s", data_dir, e->d_name);
        if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode))
            continue;
        struct bucket *b = mock_bucket_add_locked(s, e->d_name, (int64_t)st.st_mtime * 1000);
        if (!b || mock_load_bucket(s, b) < 0) {
            closedir(d);
            snprintf(err, errlen, "--data-dir %s: cannot load bucket %s", data_dir, e->d_name);
            goto out_free;
        }
    }
    closedir(d);
    return s;
out_free:
    store_close(s);
    return NULL;
}

void store_close(struct store *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nb; i++) {
        struct bucket *b = s->b[i];
        for (size_t j = 0; j < b->n; j++)
            mock_obj_free(b->objs[j]);
        free(b->objs);
        pthread_rwlock_destroy(&b->lock);
        free(b);
    }
    free(s->b);
    free(s->dir);
    pthread_rwlock_destroy(&s->lock);
    free(s);
}

enum store_mode store_mode(const struct store *s)
{
    return s->mode;
}

int store_create_bucket(struct store *s, const char *name)
{
    int rc = 0;
    if (!mock_valid_bucket_name(name))
        return -EINVAL;
    pthread_rwlock_wrlock(&s->lock);
    if (mock_bucket_find_locked(s, name)) {
        rc = -EEXIST;
        goto out_unlock;
    }
    if (s->mode == STORE_DISK) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", s->dir, name);
        if ((mkdir(path, 0755) < 0 && errno != EEXIST) || mock_fsync_dir(s->dir) < 0) {
            rc = -EIO;
            goto out_unlock;
        }
    }
    if (!mock_bucket_add_locked(s, name, mock_now_ms()))
        rc = -ENOMEM;
out_unlock:
    pthread_rwlock_unlock(&s->lock);
    return rc;
}

int store_delete_bucket(struct store *s, const char *name)
{
    int rc = 0;
    pthread_rwlock_wrlock(&s->lock);
    size_t i;
    for (i = 0; i < s->nb && strcmp(s->b[i]->name, name) != 0; i++)
        ;
    if (i == s->nb) {
        rc = -ENOENT;
        goto out_unlock;
    }
    struct bucket *b = s->b[i];
    pthread_rwlock_wrlock(&b->lock);
    bool empty = b->n == 0;
    pthread_rwlock_unlock(&b->lock);
    if (!empty) {
        rc = -ENOTEMPTY;
        goto out_unlock;
    }
    if (s->mode == STORE_DISK) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", s->dir, name);
        if (rmdir(path) < 0 || mock_fsync_dir(s->dir) < 0) {
            rc = -EIO;
            goto out_unlock;
        }
    }
    /* Every user of a bucket holds the store lock (read), so it can go now. */
    memmove(s->b + i, s->b + i + 1, (s->nb - i - 1) * sizeof(*s->b));
    s->nb--;
    free(b->objs);
    pthread_rwlock_destroy(&b->lock);
    free(b);
out_unlock:
    pthread_rwlock_unlock(&s->lock);
    return rc;
}

bool store_bucket_exists(struct store *s, const char *name)
{
    pthread_rwlock_rdlock(&s->lock);
    bool found = mock_bucket_find_locked(s, name) != NULL;
    pthread_rwlock_unlock(&s->lock);
    return found;
}

void store_list_buckets(struct store *s, void (*fn)(void *ctx, const char *name, int64_t ms),
                        void *ctx)
{
    pthread_rwlock_rdlock(&s->lock);
    for (size_t i = 0; i < s->nb; i++)
        fn(ctx, s->b[i]->name, s->b[i]->created_ms);
    pthread_rwlock_unlock(&s->lock);
}

static bool mock_cond_ok(const struct obj *o, const struct put_cond *cond, int *rc)
{
    if (!cond)
        return true;
    if (cond->if_none_match_star && o) {
        *rc = -EEXIST;
        return false;
    }
    if (cond->if_match) {
        if (!o) {
            *rc = -ESRCH;
            return false;
        }
        if (strcmp(cond->if_match, "*") != 0 && strcmp(cond->if_match, o->meta.etag) != 0) {
            *rc = -EPERM;
            return false;
        }
    }
    return true;
}

int store_put(struct store *s, const char *bucket, const char *key, size_t klen, struct blob *body,
              const struct objmeta *meta, const struct put_cond *cond)
{
    struct bucket *b;
    struct blob *old = NULL; /* the body replaced, freed after the locks are dropped */
    int rc = 0;
    size_t pos;

    /* The bucket array lock is held (read) so DeleteBucket cannot free b under us. */
    pthread_rwlock_rdlock(&s->lock);
    b = mock_bucket_find_locked(s, bucket);
    if (!b) {
        pthread_rwlock_unlock(&s->lock);
        return -ENODEV;
    }
    if (s->mode == STORE_NONE) { /* checked everything; keep nothing */
        pthread_rwlock_unlock(&s->lock);
        return 0;
    }
    pthread_rwlock_wrlock(&b->lock);
    struct obj *o = mock_find(b, key, klen, &pos);
    if (!mock_cond_ok(o, cond, &rc))
        goto out_unlock;
    if (s->mode == STORE_DISK && (rc = mock_disk_put(s, bucket, key, klen, body, meta)) < 0)
        goto out_unlock;
    if (o) {
        old = o->body;
        o->body = s->mode == STORE_MEMORY ? blob_ref(body) : NULL;
        o->meta = *meta;
        goto out_unlock;
    }
    o = calloc(1, sizeof(*o));
    if (!o || !(o->key = malloc(klen + 1))) {
        free(o);
        rc = -EIO;
        goto out_unlock;
    }
    memcpy(o->key, key, klen);
    o->key[klen] = '\0';
    o->klen = klen;
    o->body = s->mode == STORE_MEMORY ? blob_ref(body) : NULL;
    o->meta = *meta;
    if (mock_insert_obj(b, o, pos) < 0) {
        mock_obj_free(o);
        rc = -EIO;
    }
out_unlock:
    pthread_rwlock_unlock(&b->lock);
    pthread_rwlock_unlock(&s->lock);
    blob_unref(old);
    return rc;
}

int store_get(struct store *s, const char *bucket, const char *key, size_t klen,
              struct objmeta *meta, struct blob **body)
{
    int rc = 0;
    pthread_rwlock_rdlock(&s->lock);
    struct bucket *b = mock_bucket_find_locked(s, bucket);
    if (!b) {
        pthread_rwlock_unlock(&s->lock);
        return -ENODEV;
    }
    pthread_rwlock_rdlock(&b->lock);
    struct obj *o = mock_find(b, key, klen, NULL);
    if (!o) {
        rc = -ENOENT;
        goto out_unlock;
    }
    *meta = o->meta;
    if (!body)
        goto out_unlock;
    if (s->mode == STORE_MEMORY) {
        *body = blob_ref(o->body);
    } else {
        /* The file holds its own metadata; a rename in between gives the newer whole
         * object, never a mix. */
        char path[4096];
        struct disk_hdr h;
        mock_obj_path(s, bucket, key, klen, path, sizeof(path));
        rc = mock_disk_read(path, &h, NULL, body);
        if (rc == 0) {
            meta->size = h.size;
            meta->mtime_ms = h.mtime_ms;
            memcpy(meta->etag, h.etag, 32);
            meta->etag[32] = '\0';
        }
    }
out_unlock:
    pthread_rwlock_unlock(&b->lock);
    pthread_rwlock_unlock(&s->lock);
    return rc;
}

int store_delete(struct store *s, const char *bucket, const char *key, size_t klen)
{
    int rc = 0;
    size_t pos;
    pthread_rwlock_rdlock(&s->lock);
    struct bucket *b = mock_bucket_find_locked(s, bucket);
    if (!b) {
        pthread_rwlock_unlock(&s->lock);
        return -ENODEV;
    }
    pthread_rwlock_wrlock(&b->lock);
    struct obj *o = mock_find(b, key, klen, &pos);
    if (!o)
        goto out_unlock;
    if (s->mode == STORE_DISK) {
        char path[4096], dir[4096];
        mock_obj_path(s, bucket, key, klen, path, sizeof(path));
        snprintf(dir, sizeof(dir), "%s/%s", s->dir, bucket);
        if ((unlink(path) < 0 && errno != ENOENT) || mock_fsync_dir(dir) < 0) {
            rc = -EIO;
            goto out_unlock;
        }
    }
    memmove(b->objs + pos, b->objs + pos + 1, (b->n - pos - 1) * sizeof(*b->objs));
    b->n--;
    mock_obj_free(o);
out_unlock:
    pthread_rwlock_unlock(&b->lock);
    pthread_rwlock_unlock(&s->lock);
    return rc;
}

static bool mock_has_prefix(const char *k, size_t kl, const char *p, size_t pl)
{
    return kl >= pl && memcmp(k, p, pl) == 0;
}

/* Length of the common prefix of key k (prefix + up to and including the first delimiter
 * after it), or 0 when k has none. */
static size_t mock_common_prefix(const char *k, size_t kl, const struct list_args *a)
{
    if (!a->delimiter_len)
        return 0;
    for (size_t i = a->prefix_len; i + a->delimiter_len <= kl; i++)
        if (memcmp(k + i, a->delimiter, a->delimiter_len) == 0)
            return i + a->delimiter_len;
    return 0;
}

int store_list(struct store *s, const char *bucket, const struct list_args *a,
               const struct list_sink *sink, struct list_result *res)
{
    memset(res, 0, sizeof(*res));
    pthread_rwlock_rdlock(&s->lock);
    struct bucket *b = mock_bucket_find_locked(s, bucket);
    if (!b) {
        pthread_rwlock_unlock(&s->lock);
        return -ENODEV;
    }
    pthread_rwlock_rdlock(&b->lock);
    size_t i;
    if (a->after_len && mock_key_cmp(a->after, a->after_len, a->prefix, a->prefix_len) >= 0)
        i = mock_lower_bound(b, a->after, a->after_len, true);
    else
        i = mock_lower_bound(b, a->prefix, a->prefix_len, false);
    const char *last = NULL;
    size_t last_len = 0;
    for (; i < b->n; i++) {
        const struct obj *o = b->objs[i];
        if (!mock_has_prefix(o->key, o->klen, a->prefix, a->prefix_len))
            break;
        size_t cp = mock_common_prefix(o->key, o->klen, a);
        if (cp) {
            /* all keys under a prefix already emitted (or resumed after) are skipped */
            if ((last && cp == last_len && memcmp(o->key, last, cp) == 0) ||
                (a->after_len == cp && memcmp(o->key, a->after, cp) == 0))
                continue;
        }
        if (res->count >= a->max_keys) {
            res->truncated = true;
            break;
        }
        if (cp) {
            sink->prefix(sink->ctx, o->key, cp);
            last_len = cp;
        } else {
            sink->key(sink->ctx, o->key, o->klen, &o->meta);
            last_len = o->klen;
        }
        last = o->key;
        res->count++;
    }
    if (last && res->truncated) {
        res->last = malloc(last_len + 1);
        if (res->last) {
            memcpy(res->last, last, last_len);
            res->last[last_len] = '\0';
            res->last_len = last_len;
        }
    }
    pthread_rwlock_unlock(&b->lock);
    pthread_rwlock_unlock(&s->lock);
    return 0;
}
