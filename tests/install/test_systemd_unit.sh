#!/usr/bin/env bash
# Checks packaging/s3commit.service as installed: `systemd-analyze verify` must accept it
# (and its commented LoadCredential= variant) without a single warning (an unknown or misplaced key is only a warning to systemd, and
# silently drops the setting), and `systemd-analyze security --offline` must rate its
# sandbox at most 2.0 ("OK"). Runs without systemd as PID 1 (a container): verify only
# loads the unit. The ExecStart binary must exist, so the unit is checked from a
# DESTDIR install with its path pointed into the staging tree.
# Usage: test_systemd_unit.sh BUILD_DIR. Exit 77 (skipped) without systemd-analyze.
set -euo pipefail
build=$(cd "$1" && pwd)
command -v systemd-analyze >/dev/null ||
    { echo "test_systemd_unit: systemd-analyze missing (Debian package systemd); skipped"; exit 77; }
tmp=$(mktemp -d /tmp/s3c-unit.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "test_systemd_unit: $*" >&2; exit 1; }

DESTDIR="$tmp/stage" cmake --install "$build" --prefix /usr >"$tmp/install.log"
unit="$tmp/stage/usr/lib/systemd/system/s3commit.service"
[ -f "$unit" ] || fail "the install put no unit at /usr/lib/systemd/system/s3commit.service"
grep -q '^ExecStart=/usr/bin/s3commit run --config /etc/s3commit/s3commit.json --input unix:' "$unit" ||
    fail "unexpected ExecStart in the installed unit"
mkdir -p "$tmp/units"
sed "s|^ExecStart=/usr/bin/s3commit |ExecStart=$tmp/stage/usr/bin/s3commit |" "$unit" \
    >"$tmp/units/s3commit.service"

verify() {
    if ! systemd-analyze verify --man=no --generators=no "$1" >"$tmp/verify.out" 2>&1 ||
            [ -s "$tmp/verify.out" ]; then
        cat "$tmp/verify.out" >&2
        fail "systemd-analyze verify found problems in $2 (above)"
    fi
}
verify "$tmp/units/s3commit.service" "the unit"
# The documented alternative, credentials through LoadCredential=, must be valid too.
mkdir -p "$tmp/units-cred"
sed -e 's/^EnvironmentFile=/#EnvironmentFile=/' -e 's/^#LoadCredential=/LoadCredential=/' \
    -e 's/^#Environment=AWS_SHARED_CREDENTIALS_FILE=/Environment=AWS_SHARED_CREDENTIALS_FILE=/' \
    "$tmp/units/s3commit.service" >"$tmp/units-cred/s3commit.service"
grep -q '^LoadCredential=' "$tmp/units-cred/s3commit.service" || fail "no LoadCredential= line to enable"
verify "$tmp/units-cred/s3commit.service" "the LoadCredential= variant"
if ! systemd-analyze security --offline=yes --threshold=20 "$tmp/units/s3commit.service" \
        >"$tmp/security.out" 2>&1; then
    cat "$tmp/security.out" >&2
    fail "the sandbox is weaker than exposure 2.0 (above)"
fi
tail -n 1 "$tmp/security.out"

# The secrets stay out of the unit: no AWS key or secret may be set in it.
if grep -Eq '^[^#]*(AWS_SECRET_ACCESS_KEY|AWS_ACCESS_KEY_ID|AWS_SESSION_TOKEN)' "$unit"; then
    fail "the unit sets AWS credentials; they belong in the environment file or LoadCredential"
fi
echo "test_systemd_unit: ok"
