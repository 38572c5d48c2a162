/* Shared between the files of src/config: error formatting and the credential resolver.
 * Nothing here may put a secret (secret key, session token) into an error message. */
#ifndef S3C_CFG_INTERNAL_H
#define S3C_CFG_INTERNAL_H

#include <stddef.h>

#include "config/config.h"

/* Writes "config: <message>" into err (if errlen > 0) and returns S3C_ECONFIG. */
int cfg_fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Fills cfg->s3 credentials and credentials_source from, in order: what the file set
 * (file_has_key / file_has_secret / file_has_token say which keys it named), the
 * AWS_* environment, the shared credentials file. No credentials at all is allowed
 * ("none"). Returns 0 or S3C_ECONFIG with one message in err. */
int cfg_resolve_credentials(struct s3c_config *cfg, int file_has_key, int file_has_secret,
                            int file_has_token, char *err, size_t errlen);

#endif
