-- wrk script for bench-reader: GET the log's objects, cycling over the paths listed one a
-- line in $S3C_KEYS_FILE (prebuilt requests, so Lua does not become the bottleneck), then
-- one JSON line with what wrk measured. Loopback only; bench-reader bounds the time.
local reqs = {}
local n = 0

function init(args)
  for path in io.lines(os.getenv("S3C_KEYS_FILE")) do
    reqs[#reqs + 1] = wrk.format("GET", path)
  end
end

function request()
  n = n % #reqs + 1
  return reqs[n]
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
