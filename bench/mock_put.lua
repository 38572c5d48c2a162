-- wrk script for bench-mock: PUT bodies of BODY_BYTES (env, default 4096) to s3commit-mock,
-- cycling over 64 prebuilt requests (distinct keys) per thread so Lua string building does
-- not become the bottleneck. Loopback load only; bench-mock bounds the time.
local size = tonumber(os.getenv("BODY_BYTES") or "4096")
local bucket = os.getenv("BUCKET") or "bench"
local thread_id = 0
local reqs = {}
local n = 0

function setup(thread)
    thread:set("thread_id", thread_id)
    thread_id = thread_id + 1
end

function init(args)
    local body = string.rep("x", size)
    for i = 1, 64 do
        local path = string.format("/%s/t%d/k%04d", bucket, thread_id or 0, i)
        reqs[i] = wrk.format("PUT", path, {["Content-Length"] = tostring(size)}, body)
    end
end

function request()
    n = n % 64 + 1
    return reqs[n]
end

function done(summary, latency, requests)
    local bad = summary.errors.status + summary.errors.connect + summary.errors.read +
                summary.errors.write + summary.errors.timeout
    io.write(string.format("WRK requests=%d duration_us=%d bytes=%d errors=%d p50_us=%d p99_us=%d\n",
        summary.requests, summary.duration, summary.bytes, bad,
        latency:percentile(50), latency:percentile(99)))
end
