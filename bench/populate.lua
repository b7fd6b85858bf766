-- Preloads keys BENCH_KEY_PREFIX .. i for i = 0 .. BENCH_KEYS - 1: thread t creates
-- i = t-1, t-1+T, t-1+2T, ... (T = BENCH_THREADS). A thread that has sent its share sends
-- GET /health until bench.py, watching GET /ready, sees every entry and stops wrk (SIGINT).
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

function bench.init()
  next_i = tid - 1
end

function request()
  local i = next_i
  if i < bench.nkeys then
    next_i = i + bench.nthreads
    local body = string.format('{"key":"%s%d","value":%s,"category":"preload"%s}',
      bench.key_prefix, i, bench.value(i), bench.env_field)
    return bench.req("POST", "/configs", body)
  end
  return wrk.format("GET", "/health")
end
