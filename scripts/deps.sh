#!/usr/bin/env bash
# Installs what the build, the tests or the benchmarks need and the machine lacks.
# As root it uses apt-get; otherwise it names the missing packages and fails.
# Usage: scripts/deps.sh build|test|bench|demo|rgw
set -euo pipefail
want=(cmake make gcc pkg-config libcurl4-openssl-dev libssl-dev libcjson-dev libzstd-dev
      libexpat1-dev libhttp-parser-dev)
case "${1:-build}" in
    build) ;;
    demo)  want+=(python3) ;;                                        # scripts/demo-frames.py frames the restarts' commits
    test)  want+=(awscli prometheus s3cmd python3 python3-boto3 openssl  # aws CLI, s3cmd and botocore drive the mock; promtool checks /metrics; python3 + openssl CLI: the TLS test
                  g++ binutils systemd) ;;                           # test_install: the header as C++, readelf/nm; test_systemd_unit: systemd-analyze
    bench) want+=(wrk) ;;
    rgw)   want=(ceph-mon ceph-osd radosgw ceph-common uuid-runtime curl python3) ;;  # scripts/rgw.sh: Ceph RGW for tests/rgw (~70 MB)
    *) echo "deps.sh: unknown set '$1' (use build, test, bench, demo or rgw)" >&2; exit 2 ;;
esac
missing=()
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "s3commit needs these Debian packages: ${missing[*]}" >&2
    echo "install them with: sudo apt-get install ${missing[*]}" >&2
    exit 1
fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists when they are missing or older than a day.
if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null | head -n1)" ]; then
    apt-get update -qq
fi
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
