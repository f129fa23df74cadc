-- wrk script for benches/bench.py. Configured through the environment:
--   BENCH_METHOD        GET or POST (default POST)
--   BENCH_BODY          file holding the request body (POST)
--   BENCH_AUTH_HEADER   header name for the credential (Authorization, X-Vault-Token); optional
--   BENCH_AUTH_VALUE    its value, used on every request (one token: a warm verified-token cache)
--   BENCH_AUTH_FILE     instead of BENCH_AUTH_VALUE: a file of values, one a line, each sent once
--                       (distinct tokens: a cold verified-token cache); threads take disjoint
--                       slices and count how often they ran out and wrapped around ("wrapped")
-- Prints one line `BENCH_JSON {...}` with the request count, errors and latency percentiles (µs).

local method = os.getenv("BENCH_METHOD") or "POST"
local body_file = os.getenv("BENCH_BODY")
local auth_header = os.getenv("BENCH_AUTH_HEADER")
local auth_value = os.getenv("BENCH_AUTH_VALUE")
local auth_file = os.getenv("BENCH_AUTH_FILE")

local function slurp(path)
  local f = assert(io.open(path, "rb"), "cannot open " .. path)
  local s = f:read("*a")
  f:close()
  return s
end

wrk.method = method
if body_file and body_file ~= "" then
  wrk.body = slurp(body_file)
  wrk.headers["Content-Type"] = "application/json"
end
if auth_header and auth_header ~= "" and auth_value and auth_value ~= "" then
  wrk.headers[auth_header] = auth_value
end

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

-- Per-thread state (each thread has its own Lua state).
local values, first, last, pos
wrapped = 0

function init(args)
  if auth_file and auth_file ~= "" then
    values = {}
    for line in io.lines(auth_file) do
      if line ~= "" then table.insert(values, line) end
    end
    local n = #values
    local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
    local per = math.floor(n / nthreads)
    first = tid * per + 1
    last = first + per - 1
    pos = first
  end
end

if auth_file and auth_file ~= "" then
  function request()
    local headers = {}
    for k, v in pairs(wrk.headers) do headers[k] = v end
    headers[auth_header] = values[pos]
    pos = pos + 1
    if pos > last then
      pos = first
      wrapped = wrapped + 1
    end
    return wrk.format(nil, nil, headers, wrk.body)
  end
end

function done(summary, latency, requests)
  local w = 0
  for _, t in ipairs(threads) do w = w + (tonumber(t:get("wrapped")) or 0) end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d,"wrapped":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max, w))
end
