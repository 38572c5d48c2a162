#!/usr/bin/env bash
# Every program answers --help and --version on stdout with exit 0; --version says
# "NAME VERSION" with the header's S3C_VERSION_STRING; --help names the exit codes and
# every flag the docs give it (docs/programs.md synopses, docs/mock.md's flag table), and
# s3commit's and s3commit-load's flags are all in docs/programs.md. A bad flag is exit 2.
# Usage: test_program_help.sh SOURCE_DIR BIN_DIR
set -euo pipefail
src=$1 bin=$2
fail() { echo "test_program_help: $*" >&2; exit 1; }
version=$(sed -n 's/^#define S3C_VERSION_STRING "\(.*\)"$/\1/p' "$src/include/s3commit.h")
[ -n "$version" ] || fail "no S3C_VERSION_STRING in include/s3commit.h"
flags() { grep -oE -- '--[a-z][a-z-]*' | sort -u; }

doc_s3commit=$(grep -E '^## `s3commit (run|check-config|verify)' "$src/docs/programs.md" | flags)
doc_load=$(awk '/^## `s3commit-load`/ {s = 1; next} /^## / {s = 0}
                s && /^```/ {c = !c; next} s && c' "$src/docs/programs.md" | flags)
doc_mock=$(awk '/^## Flags/ {s = 1; next} /^## / {s = 0} s && /^\| `--/' "$src/docs/mock.md" |
           cut -d'|' -f2 | flags)
[ -n "$doc_s3commit" ] && [ -n "$doc_load" ] && [ -n "$doc_mock" ] ||
    fail "could not find the documented flags in docs/programs.md and docs/mock.md"

check() {
    local prog=$1 documented=$2 out err rc
    err=$(mktemp)
    out=$("$bin/$prog" --help 2>"$err") || fail "$prog --help exited $?"
    [ -n "$out" ] || fail "$prog --help printed nothing on stdout"
    [ ! -s "$err" ] || fail "$prog --help wrote to stderr: $(cat "$err")"
    grep -qi "exit codes" <<<"$out" || fail "$prog --help does not give the exit codes"
    for f in $documented --help --version; do
        grep -q -- "$f\b" <<<"$out" || fail "$prog --help does not mention $f (documented)"
    done
    out=$("$bin/$prog" --version 2>"$err") || fail "$prog --version exited $?"
    [ "$out" = "$prog $version" ] || fail "$prog --version said '$out', expected '$prog $version'"
    [ ! -s "$err" ] || fail "$prog --version wrote to stderr: $(cat "$err")"
    rc=0
    "$bin/$prog" --no-such-flag >/dev/null 2>"$err" || rc=$?
    [ "$rc" = 2 ] || fail "$prog --no-such-flag exited $rc, expected 2"
    rm -f "$err"
    echo "$prog: --help and --version ok"
}
check s3commit "$doc_s3commit"
check s3commit-load "$doc_load"
check s3commit-mock "$doc_mock"

# The other way round: nothing s3commit or s3commit-load offers is undocumented.
for prog in s3commit s3commit-load; do
    for f in $("$bin/$prog" --help | flags); do
        grep -q -- "$f\b" "$src/docs/programs.md" || fail "$prog --help offers $f; docs/programs.md does not"
    done
done
# --help after a subcommand, too.
"$bin/s3commit" run --help | grep -q -- "--input" || fail "s3commit run --help is not the usage"
echo "test_program_help: ok"
