#!/usr/bin/env bash
# Installs the build into a temporary DESTDIR (prefix /usr/local) and uses it the way a
# user would, with nothing from the source or build tree: the file layout and SONAME, the
# installed programs' --version, the header compiled alone as C11 and C++ with -Werror
# -pedantic, consumer.c built with pkg-config and with find_package (shared and static)
# and run against the installed s3commit-mock, and `s3commit verify` on what it wrote.
# Usage: test_install.sh BUILD_DIR   (CTest passes it; see CMakeLists.txt here)
set -euo pipefail
build=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d /tmp/s3c-install.XXXXXX)
mock_pid=
cleanup() {
    [ -n "$mock_pid" ] && kill "$mock_pid" 2>/dev/null && wait "$mock_pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "test_install: $*" >&2; exit 1; }
step() { echo "# $*"; }

# Nothing may leak in from the environment: the installed tree must stand alone.
unset LD_LIBRARY_PATH S3C_MOCK_BIN S3C_BIN_DIR PKG_CONFIG_PATH CMAKE_PREFIX_PATH
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_PROFILE

step "cmake --install into DESTDIR=$tmp/stage, prefix /usr/local"
DESTDIR="$tmp/stage" cmake --install "$build" --prefix /usr/local >"$tmp/install.log" ||
    { cat "$tmp/install.log" >&2; fail "cmake --install failed"; }
root="$tmp/stage/usr/local"
# The library directory is lib, or lib/<multiarch> when the build was configured for /usr.
pcfile=$(find "$root" -path '*/pkgconfig/s3commit.pc' | head -n 1)
[ -n "$pcfile" ] || fail "not installed: lib/pkgconfig/s3commit.pc"
lib=${pcfile#"$root"/}
lib=${lib%/pkgconfig/s3commit.pc}
for f in include/s3commit.h $lib/libs3commit.a $lib/libs3commit.so $lib/pkgconfig/s3commit.pc \
         $lib/cmake/s3commit/s3commitConfig.cmake $lib/cmake/s3commit/s3commitConfigVersion.cmake \
         $lib/cmake/s3commit/s3commitTargets.cmake bin/s3commit bin/s3commit-mock \
         bin/s3commit-load lib/systemd/system/s3commit.service lib/sysusers.d/s3commit.conf \
         share/doc/s3commit/README.md share/doc/s3commit/operations.md \
         share/doc/s3commit/programs.md share/doc/s3commit/examples/s3commit.json \
         share/doc/s3commit/examples/s3commit.env; do
    [ -e "$root/$f" ] || fail "not installed: $f"
done

export PKG_CONFIG_PATH="$root/$lib/pkgconfig"
pc() { pkg-config --define-variable=prefix="$root" "$@" s3commit; }
version=$(pkg-config --modversion s3commit)
soversion=$(echo "$version" | cut -d. -f1-2)
[ "${version%%.*}" = 0 ] || soversion=${version%%.*}
step "version $version, SONAME libs3commit.so.$soversion"
readelf -d "$root/$lib/libs3commit.so" | grep -q "SONAME.*\[libs3commit.so.$soversion\]" ||
    fail "libs3commit.so has no SONAME libs3commit.so.$soversion"
[ -e "$root/$lib/libs3commit.so.$soversion" ] && [ -e "$root/$lib/libs3commit.so.$version" ] ||
    fail "missing libs3commit.so.$soversion or libs3commit.so.$version"
if nm -D --defined-only "$root/$lib/libs3commit.so" | awk '$2 == "T" {print $3}' | grep -v '^s3c_[a-z]'; then
    fail "libs3commit.so exports names outside the public s3c_* API (above)"
fi
grep -q "^prefix=/usr/local$" "$pcfile" || fail "s3commit.pc prefix is not /usr/local"
grep -q "^ExecStart=/usr/local/bin/s3commit run " "$root/lib/systemd/system/s3commit.service" ||
    fail "the installed unit does not run /usr/local/bin/s3commit"

step "installed programs answer --version and --help"
for p in s3commit s3commit-mock s3commit-load; do
    out=$("$root/bin/$p" --version) || fail "$p --version exited $?"
    [ "$out" = "$p $version" ] || fail "$p --version said '$out', expected '$p $version'"
    "$root/bin/$p" --help | grep -q "usage" || fail "$p --help printed no usage"
done

step "the header alone: C11 and C++ with -Werror -pedantic"
printf '#include <s3commit.h>\nint main(void) { return s3c_version() == 0; }\n' >"$tmp/hdr.c"
cp "$tmp/hdr.c" "$tmp/hdr.cpp"
for std in c99 c11 c17; do
    gcc -std=$std -Wall -Wextra -Werror -pedantic $(pc --cflags) -c "$tmp/hdr.c" -o "$tmp/hdr.o" ||
        fail "s3commit.h does not compile alone as $std"
done
if command -v g++ >/dev/null; then
    for std in c++11 c++17; do
        g++ -std=$std -Wall -Wextra -Werror -pedantic $(pc --cflags) -c "$tmp/hdr.cpp" -o "$tmp/hdr.o" ||
            fail "s3commit.h does not compile alone as $std"
    done
else
    fail "g++ is missing (scripts/deps.sh test installs it)"
fi

step "consumer.c with pkg-config: shared, then static (Requires.private, Libs.private)"
gcc -std=c11 -Wall -Wextra -Werror "$here/consumer.c" $(pc --cflags --libs) \
    -Wl,-rpath,"$root/$lib" -o "$tmp/consumer_pc_shared"
readelf -d "$tmp/consumer_pc_shared" | grep -q "NEEDED.*libs3commit.so.$soversion" ||
    fail "the pkg-config build does not link libs3commit.so.$soversion"
# `pkg-config --static` also expands libcurl's own Libs.private (nghttp2, ssh2, ldap...),
# whose -dev packages a system with a shared libcurl lacks. So check that our flags are
# all there, then link libs3commit.a with what s3commit.pc itself names: its
# Requires.private modules (shared) and its Libs.private.
static_flags=" $(pc --static --libs) "
for f in -ls3commit -lcurl -lcrypto -lcjson -lexpat -lzstd -lhttp_parser -lpthread -lm; do
    case "$static_flags" in *" $f "*) ;; *) fail "pkg-config --static --libs lacks $f: $static_flags" ;; esac
done
requires=$(pkg-config --print-requires-private s3commit | awk '{print $1}')
libs_private=$(sed -n 's/^Libs.private: *//p' "$pcfile")
gcc -std=c11 -Wall -Wextra -Werror "$here/consumer.c" $(pc --cflags) $(pc --libs-only-L) \
    -l:libs3commit.a $(pkg-config --libs $requires) $libs_private -o "$tmp/consumer_pc_static"
if readelf -d "$tmp/consumer_pc_static" | grep -q "NEEDED.*libs3commit"; then
    fail "the static pkg-config build still needs libs3commit.so"
fi

step "consumer.c with find_package(s3commit): s3commit::s3commit and ::s3commit_static"
cmake -S "$here/consumer-cmake" -B "$tmp/cmake" -DCMAKE_PREFIX_PATH="$root" \
    -DCMAKE_BUILD_TYPE=Release >"$tmp/cmake.log" 2>&1 || { cat "$tmp/cmake.log" >&2; fail "configure failed"; }
cmake --build "$tmp/cmake" >>"$tmp/cmake.log" 2>&1 || { cat "$tmp/cmake.log" >&2; fail "build failed"; }
readelf -d "$tmp/cmake/consumer_shared" | grep -q "NEEDED.*libs3commit.so.$soversion" ||
    fail "s3commit::s3commit did not link libs3commit.so.$soversion"
if readelf -d "$tmp/cmake/consumer_static" | grep -q "NEEDED.*libs3commit"; then
    fail "s3commit::s3commit_static links libs3commit.so"
fi

step "run them against the installed mock, then verify with the installed s3commit"
"$root/bin/s3commit-mock" --listen 127.0.0.1:0 --bucket commits >"$tmp/mock.out" 2>"$tmp/mock.err" &
mock_pid=$!
for _ in $(seq 100); do
    grep -q "^listening on " "$tmp/mock.out" && break
    kill -0 "$mock_pid" 2>/dev/null || { cat "$tmp/mock.err" >&2; fail "the mock exited"; }
    sleep 0.05
done
port=$(sed -n 's/^listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$tmp/mock.out")
[ -n "$port" ] || fail "the mock did not say its port"
endpoint="http://127.0.0.1:$port"
for c in pc_shared pc_static cmake/consumer_shared cmake/consumer_static; do
    bin="$tmp/consumer_$c"
    [ -x "$bin" ] || bin="$tmp/$c"
    prefix="$(basename "$c")/"
    "$bin" "$endpoint" "$prefix" 250 || fail "$c failed"
    printf '{"s3":{"endpoint":"%s","bucket":"commits","prefix":"%s"}}\n' "$endpoint" "$prefix" \
        >"$tmp/verify.json"
    "$root/bin/s3commit" verify --config "$tmp/verify.json" --expect-commits 250 >"$tmp/verify.out" ||
        { cat "$tmp/verify.out" >&2; fail "verify of $prefix failed"; }
done
echo "test_install: ok"
