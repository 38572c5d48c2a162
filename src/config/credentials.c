/* Where the S3 credentials come from: the config file, the AWS_* environment, or the
 * shared credentials file (a tiny INI). Never puts a key, secret or token into a message:
 * errors name the variable, file, profile and key, not the value. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/cfg_internal.h"

/* Copies a credential into dst; refuses one that does not fit or holds bytes that
 * cannot go into an HTTP header. where names the source for the message. */
static int cfg_cred_copy(char *dst, size_t cap, const char *val, const char *where, char *err,
                         size_t errlen)
{
    size_t n = strlen(val);

    if (n >= cap)
        return cfg_fail(err, errlen, "%s must be at most %zu bytes (got %zu bytes)", where, cap - 1,
                        n);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)val[i];
        if (c <= 0x20 || c >= 0x7f)
            return cfg_fail(err, errlen,
                            "%s must be printable ASCII without spaces (byte %zu is 0x%02x)", where,
                            i, c);
    }
    memcpy(dst, val, n + 1);
    return 0;
}

static const char *cfg_env_nonempty(const char *name)
{
    const char *v = getenv(name);
    return (v && *v) ? v : NULL;
}

static char *cfg_trim(char *s)
{
    char *e;

    while (*s == ' ' || *s == '\t')
        s++;
    e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
        *--e = '\0';
    return s;
}

struct ini_creds {
    char key[128], secret[128], token[2048];
    bool file_found; /* the file exists */
    int found_profile;
    int has_key, has_secret, has_token;
};

/* Reads [profile] from an AWS shared credentials file. Returns 0 (file_found and
 * found_profile say whether the file and the section exist) or S3C_ECONFIG. */
static int cfg_ini_read(const char *path, const char *profile, struct ini_creds *out, char *err,
                        size_t errlen)
{
    FILE *f = fopen(path, "r");
    char line[4096];
    int in_profile = 0, lineno = 0, rc = 0;

    if (!f) {
        if (errno == ENOENT)
            return 0;
        return cfg_fail(err, errlen, "cannot read %s: %s", path, strerror(errno));
    }
    out->file_found = true;
    while (fgets(line, sizeof(line), f)) {
        char *s = cfg_trim(line), *eq, *k, *v, *end;

        lineno++;
        if (*s == '\0' || *s == '#' || *s == ';')
            continue;
        if (*s == '[') {
            end = strchr(s, ']');
            if (!end) {
                rc = cfg_fail(err, errlen, "%s: line %d: section header without ']'", path, lineno);
                goto out_close;
            }
            *end = '\0';
            k = cfg_trim(s + 1);
            in_profile = strcmp(k, profile) == 0;
            if (in_profile)
                out->found_profile = 1;
            continue;
        }
        if (!in_profile)
            continue;
        eq = strchr(s, '=');
        if (!eq) /* continuation lines of nested settings: not ours */
            continue;
        *eq = '\0';
        k = cfg_trim(s);
        v = cfg_trim(eq + 1);
        if (strcmp(k, "aws_access_key_id") == 0) {
            char where[64 + 4096];
            snprintf(where, sizeof(where), "%s: [%s] aws_access_key_id", path, profile);
            rc = cfg_cred_copy(out->key, sizeof(out->key), v, where, err, errlen);
            out->has_key = *v != '\0';
        } else if (strcmp(k, "aws_secret_access_key") == 0) {
            char where[64 + 4096];
            snprintf(where, sizeof(where), "%s: [%s] aws_secret_access_key", path, profile);
            rc = cfg_cred_copy(out->secret, sizeof(out->secret), v, where, err, errlen);
            out->has_secret = *v != '\0';
        } else if (strcmp(k, "aws_session_token") == 0 || strcmp(k, "aws_security_token") == 0) {
            char where[64 + 4096];
            snprintf(where, sizeof(where), "%s: [%s] %s", path, profile, k);
            rc = cfg_cred_copy(out->token, sizeof(out->token), v, where, err, errlen);
            out->has_token = *v != '\0';
        }
        if (rc)
            goto out_close;
    }
out_close:
    explicit_bzero(line, sizeof(line));
    fclose(f);
    return rc;
}

static int cfg_from_shared_file(struct s3c_config *cfg, char *err, size_t errlen)
{
    const char *explicit_profile = cfg_env_nonempty("AWS_PROFILE");
    const char *profile = explicit_profile ? explicit_profile : "default";
    const char *file = cfg_env_nonempty("AWS_SHARED_CREDENTIALS_FILE");
    const char *home = cfg_env_nonempty("HOME");
    char path[4096];
    struct ini_creds ic;
    int rc;

    if (file)
        snprintf(path, sizeof(path), "%s", file);
    else if (home)
        snprintf(path, sizeof(path), "%s/.aws/credentials", home);
    else
        path[0] = '\0';

    memset(&ic, 0, sizeof(ic));
    rc = path[0] ? cfg_ini_read(path, profile, &ic, err, errlen) : 0;
    if (rc < 0)
        goto out_wipe;
    if (!ic.file_found || !ic.found_profile) {
        /* An explicitly named profile or file that is not there is a mistake to report;
         * the implicit default being absent just means anonymous. */
        if (explicit_profile && !ic.file_found)
            rc = cfg_fail(err, errlen,
                          "AWS_PROFILE=%s but the shared credentials file %s does not exist",
                          profile, path[0] ? path : "(HOME is not set)");
        else if (explicit_profile)
            rc = cfg_fail(err, errlen,
                          "AWS_PROFILE=%s but %s has no [%s] profile; fix AWS_PROFILE or "
                          "add the profile",
                          profile, path, profile);
        else if (file && !ic.file_found)
            rc = cfg_fail(err, errlen, "AWS_SHARED_CREDENTIALS_FILE=%s: no such file", path);
        else
            rc = 0;
        goto out_wipe;
    }
    if (ic.has_key != ic.has_secret) {
        rc = cfg_fail(err, errlen,
                      "%s: profile [%s] sets %s but not %s; set both aws_access_key_id and "
                      "aws_secret_access_key",
                      path, profile, ic.has_key ? "aws_access_key_id" : "aws_secret_access_key",
                      ic.has_key ? "aws_secret_access_key" : "aws_access_key_id");
        goto out_wipe;
    }
    if (!ic.has_key) {
        rc = cfg_fail(err, errlen,
                      "%s: profile [%s] has no aws_access_key_id / aws_secret_access_key", path,
                      profile);
        goto out_wipe;
    }
    memcpy(cfg->s3.access_key_id, ic.key, sizeof(ic.key));
    memcpy(cfg->s3.secret_access_key, ic.secret, sizeof(ic.secret));
    memcpy(cfg->s3.session_token, ic.token, sizeof(ic.token));
    snprintf(cfg->s3.credentials_source, sizeof(cfg->s3.credentials_source), "shared-file:%.40s",
             profile);
out_wipe:
    explicit_bzero(&ic, sizeof(ic));
    return rc;
}

int cfg_resolve_credentials(struct s3c_config *cfg, int file_has_key, int file_has_secret,
                            int file_has_token, char *err, size_t errlen)
{
    const char *ek, *es, *et;
    int rc;

    if (file_has_key || file_has_secret || file_has_token) {
        if (file_has_key != file_has_secret || !file_has_key)
            return cfg_fail(err, errlen,
                            "s3.access_key_id and s3.secret_access_key must be set together "
                            "(got only %s)",
                            file_has_key      ? "s3.access_key_id"
                            : file_has_secret ? "s3.secret_access_key"
                                              : "s3.session_token");
        snprintf(cfg->s3.credentials_source, sizeof(cfg->s3.credentials_source), "config");
        return 0;
    }

    ek = cfg_env_nonempty("AWS_ACCESS_KEY_ID");
    es = cfg_env_nonempty("AWS_SECRET_ACCESS_KEY");
    et = cfg_env_nonempty("AWS_SESSION_TOKEN");
    if (ek || es) {
        if (!ek || !es)
            return cfg_fail(err, errlen,
                            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together "
                            "(got only %s)",
                            ek ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY");
        rc = cfg_cred_copy(cfg->s3.access_key_id, sizeof(cfg->s3.access_key_id), ek,
                           "AWS_ACCESS_KEY_ID", err, errlen);
        if (!rc)
            rc = cfg_cred_copy(cfg->s3.secret_access_key, sizeof(cfg->s3.secret_access_key), es,
                               "AWS_SECRET_ACCESS_KEY", err, errlen);
        if (!rc && et)
            rc = cfg_cred_copy(cfg->s3.session_token, sizeof(cfg->s3.session_token), et,
                               "AWS_SESSION_TOKEN", err, errlen);
        if (rc)
            return rc;
        snprintf(cfg->s3.credentials_source, sizeof(cfg->s3.credentials_source), "env");
        return 0;
    }

    rc = cfg_from_shared_file(cfg, err, errlen);
    if (rc)
        return rc;
    if (cfg->s3.access_key_id[0] == '\0')
        snprintf(cfg->s3.credentials_source, sizeof(cfg->s3.credentials_source), "none");
    return 0;
}
