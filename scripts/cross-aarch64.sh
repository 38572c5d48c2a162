#!/usr/bin/env bash
# Checks the aarch64 CRC-32C paths (ARMv8 crc32c instructions and the software fallback) on
# an x86 machine: cross-compiles src/common/crc32c.c with tests/common/test_crc32c.c
# statically and runs them under qemu-user. Not part of `make test`: it needs
#   apt-get install -y gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
# and exits 0 with a message naming them when they are absent.
# Usage: scripts/cross-aarch64.sh [OUT_DIR]   (default build-cross-aarch64)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build-cross-aarch64}
cc=aarch64-linux-gnu-gcc
qemu=qemu-aarch64

missing=()
command -v "$cc" >/dev/null || missing+=(gcc-aarch64-linux-gnu)
[ -e /usr/aarch64-linux-gnu/lib/libc.a ] || missing+=(libc6-dev-arm64-cross)
command -v "$qemu" >/dev/null || missing+=(qemu-user)
if [ ${#missing[@]} -gt 0 ]; then
    echo "cross-aarch64: skipped: missing Debian packages: ${missing[*]}" \
        "(apt-get install -y ${missing[*]})"
    exit 0
fi

mkdir -p "$out"
# The project's warning flags, and the default -march (armv8-a, no +crc): the hardware
# functions must get their instructions from their target attribute alone.
flags=(-std=c11 -O2 -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -D_GNU_SOURCE
       -Isrc -Itests -pthread)
srcs=(src/common/crc32c.c tests/common/test_crc32c.c)
"$cc" "${flags[@]}" -static "${srcs[@]}" -o "$out/test_crc32c-hw"
"$cc" "${flags[@]}" -static -DS3C_CRC32C_NO_HW "${srcs[@]}" -o "$out/test_crc32c-sw"
echo "cross-aarch64: built with $("$cc" --version | head -1); running under $("$qemu" --version | head -1)"

# The hardware binary must really contain crc32c instructions (objdump, when present).
if command -v aarch64-linux-gnu-objdump >/dev/null; then
    n=$(aarch64-linux-gnu-objdump -d "$out/test_crc32c-hw" | grep -c $'\tcrc32c[bhwx]' || true)
    echo "cross-aarch64: crc32c instructions in the hw binary: $n"
    [ "$n" -gt 0 ] || { echo "cross-aarch64: FAIL: no crc32c instruction compiled in"; exit 1; }
fi

# run NAME CPU BINARY EXPECTED_PATH: runs the test, prints its path and digest.
declare -A digest
run() {
    local name=$1 cpu=$2 bin=$3 want=$4 log
    log=$("$qemu" -cpu "$cpu" "$bin" --expect "$want" 2>&1) || {
        echo "$log"
        echo "cross-aarch64: FAIL: $name (qemu -cpu $cpu, expected path $want)"
        exit 1
    }
    local path d
    path=$(sed -n 's/^-- crc32c path: //p' <<<"$log")
    d=$(sed -n 's/^-- digest of random_buffers: //p' <<<"$log")
    digest[$name]=$d
    echo "cross-aarch64: PASS $name: qemu -cpu $cpu, path $path, digest $d"
}
# QEMU has no aarch64 CPU model without the CRC extension (it is mandatory from ARMv8.1)
# and no switch to hide HWCAP_CRC32, so the software path is the same sources built with
# -DS3C_CRC32C_NO_HW.
run hw-max max "$out/test_crc32c-hw" armv8-crc
run hw-a53 cortex-a53 "$out/test_crc32c-hw" armv8-crc
run sw-max max "$out/test_crc32c-sw" software
# The host's own build (x86-64: sse4.2 where present) must agree too: same seed, same buffers.
if command -v gcc >/dev/null; then
    gcc "${flags[@]}" "${srcs[@]}" -o "$out/test_crc32c-host"
    log=$("$out/test_crc32c-host" 2>&1) || { echo "$log"; echo "cross-aarch64: FAIL: host"; exit 1; }
    digest[host]=$(sed -n 's/^-- digest of random_buffers: //p' <<<"$log")
    echo "cross-aarch64: PASS host ($(uname -m)): path" \
        "$(sed -n 's/^-- crc32c path: //p' <<<"$log"), digest ${digest[host]}"
fi
for k in hw-max hw-a53 ${digest[host]:+host}; do
    if [ "${digest[$k]}" != "${digest[sw-max]}" ]; then
        echo "cross-aarch64: FAIL: $k and sw-max computed different CRCs" \
            "(digests ${digest[$k]} vs ${digest[sw-max]})"
        exit 1
    fi
done
echo "cross-aarch64: OK: armv8-crc and software paths pass the RFC 3720 and check vectors" \
    "and the bit-at-a-time reference, and agree on every random buffer"
