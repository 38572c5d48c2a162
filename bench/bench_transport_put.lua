-- wrk script for bench-transport and bench-stage (run by bench/wrk.c): PUT bodies of
-- $S3C_BODY_BYTES bytes (default 1 MiB) to s3commit-mock (anonymous, --store none), bytes
-- all 'x' as in bench-transport, then one JSON line with what wrk measured.
local size = tonumber(os.getenv("S3C_BODY_BYTES") or "1048576")
wrk.method = "PUT"
wrk.body = string.rep("x", size)
wrk.headers["Content-Type"] = "application/octet-stream"
-- The same checksum header the transport sends, so the server does the same work.
local crc = os.getenv("S3C_CRC32C_B64")
if crc and crc ~= "" then
  wrk.headers["x-amz-checksum-crc32c"] = crc
end
-- The stage's conditional writes (the server looks the key up before it answers).
local inm = os.getenv("S3C_IF_NONE_MATCH")
if inm and inm ~= "" then
  wrk.headers["If-None-Match"] = inm
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"wrk_requests":%d,"wrk_duration_us":%d,"wrk_bytes_read":%d,"wrk_non2xx":%d,' ..
    '"wrk_socket_errors":%d,"wrk_p50_us":%d,"wrk_p99_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.status,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
