-- Preloads keys BENCH_KEY_PREFIX .. i for i = 0 .. BENCH_KEYS - 1: thread t creates
-- i = t-1, t-1+T, t-1+2T, ... (T = BENCH_THREADS). A thread that has sent its share creates
-- BENCH_DONE_FILE.<tid> (when set) and sends GET /health until bench.py, watching
-- GET /ready, sees every entry and stops wrk (SIGINT). A create lost to a connection error
-- is not retried here (wrk sends a fresh request on the new connection): bench.py creates
-- whatever is missing once every thread is done.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

-- BENCH_KEY_FIRST (default 0): the first index, so a store can grow in steps.
local first = tonumber(os.getenv("BENCH_KEY_FIRST") or "") or 0

function bench.init()
  next_i = first + tid - 1
end

bench.request(function()
  local i = next_i
  if i < first + bench.nkeys then
    next_i = i + bench.nthreads
    local body = string.format('{"key":"%s%d","value":%s,"category":"preload"%s}',
      bench.key_prefix, i, bench.value(i), bench.env_field)
    return bench.req("POST", "/configs", body)
  end
  if not done_marked then
    done_marked = true
    local marker = os.getenv("BENCH_DONE_FILE")
    if marker and marker ~= "" then
      local f = io.open(marker .. "." .. tid, "w")
      if f then f:close() end
    end
  end
  return wrk.format("GET", "/health")
end)
