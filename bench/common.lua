-- Shared by the SecureConf wrk scripts; each script loads it with dofile() from its own
-- directory. Every wrk thread (and wrk's main state, which runs setup() and done()) loads
-- the script separately, so everything here is per Lua state.
--
-- Configured by environment variables (bench.py sets them):
--   BENCH_USER_KEY    X-User-Key sent on every request
--   BENCH_API_KEY     X-API-Key, sent only when set and non-empty
--   BENCH_BEARER      Authorization: Bearer token (OSC_AUTH_MODE=tokens), sent only when set
--   BENCH_ENV         environment of the keys ("" or unset: the default environment)
--   BENCH_KEY         the key read_one.lua reads
--   BENCH_KEY_PREFIX  preloaded keys are named BENCH_KEY_PREFIX .. i, i = 0 .. BENCH_KEYS - 1
--   BENCH_KEYS        number of preloaded keys
--   BENCH_PREFIX      name prefix of keys created by write_unique.lua (unique per run and per wrk process)
--   BENCH_WRITE_PCT   percentage of writes in mix.lua (default 10)
--   BENCH_THREADS     wrk's -t, used by populate.lua to split the key range
--
-- done() prints one line "BENCH_JSON {...}" with the totals and latency percentiles
-- (microseconds) that bench.py parses.

bench = {}

local function getenv(name, default)
  local v = os.getenv(name)
  if v == nil or v == "" then return default end
  return v
end

bench.user_key = getenv("BENCH_USER_KEY", "bench-user-key-0001")
bench.api_key = getenv("BENCH_API_KEY", nil)
bench.env = getenv("BENCH_ENV", nil)
bench.key = getenv("BENCH_KEY", "bench-hot-key")
bench.key_prefix = getenv("BENCH_KEY_PREFIX", "cfg-")
bench.nkeys = tonumber(getenv("BENCH_KEYS", "10000"))
bench.prefix = getenv("BENCH_PREFIX", "w")
bench.write_pct = tonumber(getenv("BENCH_WRITE_PCT", "10"))
bench.nthreads = tonumber(getenv("BENCH_THREADS", "1"))

bench.headers = { ["X-User-Key"] = bench.user_key, ["Content-Type"] = "application/json" }
if bench.api_key then bench.headers["X-API-Key"] = bench.api_key end
bench.bearer = getenv("BENCH_BEARER", nil)
if bench.bearer then bench.headers["Authorization"] = "Bearer " .. bench.bearer end

-- "?environment=..." for paths, ',"environment":"..."' for create bodies.
bench.query = bench.env and ("?environment=" .. bench.env) or ""
bench.env_field = bench.env and (',"environment":"' .. bench.env .. '"') or ""

-- Main state: give every thread a distinct id. All thread states start with the same
-- random seed, so anything that must differ between threads derives from tid.
local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

-- Thread state counters (globals, so done() can read them with thread:get()).
bench_ok, bench_bad, bench_sent, bench_last_bad, bench_seq = 0, 0, 0, 0, 0

function init(args)
  tid = tid or 1
  bench_verify_pending = (tid == 1)
  math.randomseed(tid * 7919 + os.time())
  for _ = 1, 10 do math.random() end
  if bench.init then bench.init() end
end

-- Installs fn as request(). wrk calls request() once in the first thread's state before
-- the run, only to check the script (it counts the requests returned), and never sends
-- that request: that call gets a GET /health, so no key and no counter is spent on it.
function bench.request(fn)
  request = function()
    if bench_verify_pending then
      bench_verify_pending = false
      return wrk.format("GET", "/health")
    end
    return fn()
  end
end

-- Builds a request and counts it as sent.
function bench.req(method, path, body)
  bench_sent = bench_sent + 1
  return wrk.format(method, path, bench.headers, body)
end

-- A preloaded key chosen uniformly at random.
function bench.random_key()
  return bench.key_prefix .. math.random(0, bench.nkeys - 1)
end

function bench.value(n)
  return string.format('{"host":"db.internal","port":5432,"password":"s3cret-%d","pool":{"min":2,"max":16}}', n)
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    bench_ok = bench_ok + 1
  else
    bench_bad = bench_bad + 1
    bench_last_bad = status
  end
end

function done(summary, latency, requests)
  local ok, bad, sent, last_bad = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    ok = ok + (t:get("bench_ok") or 0)
    bad = bad + (t:get("bench_bad") or 0)
    sent = sent + (t:get("bench_sent") or 0)
    local lb = t:get("bench_last_bad") or 0
    if lb ~= 0 then last_bad = lb end
  end
  local e = summary.errors
  local p = function(q) return latency:percentile(q) end
  io.write(string.format(
    'BENCH_JSON {"duration_us":%.0f,"requests":%.0f,"bytes":%.0f,"ok":%.0f,"non2xx":%.0f,"sent":%.0f,' ..
    '"last_non2xx_status":%.0f,"errors":{"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f},' ..
    '"latency_us":{"min":%.0f,"mean":%.1f,"stdev":%.1f,"max":%.0f,"p50":%.0f,"p75":%.0f,"p90":%.0f,"p99":%.0f,"p999":%.0f}}\n',
    summary.duration, summary.requests, summary.bytes, ok, bad, sent, last_bad,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.stdev, latency.max,
    p(50), p(75), p(90), p(99), p(99.9)))
end
