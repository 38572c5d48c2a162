/* s3c_version(): the version this library was built as, taken from the public header,
 * which CMake checks against project(VERSION). Nothing else belongs here. */
#include "s3commit.h"

const char *s3c_version(void)
{
    return S3C_VERSION_STRING;
}

int s3c_version_number(void)
{
    return S3C_VERSION_NUMBER;
}
