# Sourced by the client scripts beside it (awscli.sh, botocore.sh, s3cmd.sh); each defines
# fail() first. mock_start NAME ACCESS_KEY SECRET_KEY starts s3commit-mock ($S3C_MOCK_BIN)
# on a free port of 127.0.0.1 with SigV4 on and bucket "commits", in a work directory of
# its own, and sets WORK, MOCK_PID and MOCK_PORT. At exit the mock is stopped by pid and
# the directory removed. A mock that does not start fails the script with its own words.

mock_cleanup() {
    if [ -n "${MOCK_PID:-}" ]; then
        kill -TERM "$MOCK_PID" 2>/dev/null || true
        wait "$MOCK_PID" 2>/dev/null || true
    fi
    rm -rf "${WORK:-/nonexistent}"
}

mock_start() {
    local mock=${S3C_MOCK_BIN:?S3C_MOCK_BIN is not set (run through ctest)} line
    WORK=$(mktemp -d "/tmp/s3c-$1-XXXXXX")
    MOCK_PID=
    trap mock_cleanup EXIT
    "$mock" --listen 127.0.0.1:0 --bucket commits --access-key "$2" \
        --secret-key "$3" >"$WORK/mock.out" 2>"$WORK/mock.err" &
    MOCK_PID=$!
    for _ in $(seq 100); do
        [ -s "$WORK/mock.out" ] && break
        sleep 0.05
    done
    line=$(head -n1 "$WORK/mock.out")
    case "$line" in
        "listening on 127.0.0.1:"*) ;;
        *) fail "the mock did not start: '$line' $(cat "$WORK/mock.err")" ;;
    esac
    MOCK_PORT=${line##*:}
}
