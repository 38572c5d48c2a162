#!/usr/bin/env bash
# Runs ctest in a build directory. Sanitizer runtimes cannot map their shadow memory
# under the kernel's full mmap randomisation, so tests run with ASLR off (setarch -R)
# when that is allowed here.
set -euo pipefail
dir=$1; shift
runner=()
if setarch "$(uname -m)" -R true 2>/dev/null; then runner=(setarch "$(uname -m)" -R); fi
exec "${runner[@]}" ctest --test-dir "$dir" --output-on-failure -j "$(nproc)" "$@"
