-- Unique-key creates: POST /configs with key "{BENCH_PREFIX}-t{tid}-{n}". The thread id
-- comes from setup() (every wrk thread starts with the same random seed), so no two
-- requests of a run ever name the same key: any non-2xx is a real failure.
--
-- With BENCH_STOP_FILE set (the cluster benchmark), a thread stops issuing writes as soon
-- as that file exists, waits for the answers to its writes still in flight (sending
-- GET /health on idle connections meanwhile), creates BENCH_STOP_FILE.stopped.<prefix>.<tid>
-- and stops. So every write that reached a node is acknowledged and counted, and
-- bench.py can compare the acknowledged writes with the cluster's revision count.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local stop_file = os.getenv("BENCH_STOP_FILE")
if stop_file == "" then stop_file = nil end
local stopping, finished, outstanding = false, false, 0

local function finish()
  if finished then return end
  finished = true
  local f = io.open(string.format("%s.stopped.%s.%d", stop_file, bench.prefix, tid), "w")
  if f then f:write(string.format("%d %d %d\n", bench_ok, bench_bad, bench_sent)); f:close() end
  wrk.thread:stop()
end

bench.request(function()
  if stop_file and not stopping then
    local f = io.open(stop_file, "r")
    if f then f:close(); stopping = true end
  end
  if stopping then
    if outstanding == 0 then finish() end
    return wrk.format("GET", "/health")
  end
  bench_seq = bench_seq + 1
  outstanding = outstanding + 1
  local body = string.format('{"key":"%s-t%d-%d","value":%s,"category":"bench"%s}',
    bench.prefix, tid, bench_seq, bench.value(bench_seq), bench.env_field)
  return bench.req("POST", "/configs", body)
end)

function response(status, headers, body)
  -- A create answers 201, never 200: a 200 after the stop is one of the /health requests.
  if stopping and status == 200 then
    if outstanding == 0 then finish() end
    return
  end
  outstanding = outstanding - 1
  if status >= 200 and status < 300 then
    bench_ok = bench_ok + 1
  else
    bench_bad = bench_bad + 1
    bench_last_bad = status
  end
  if stopping and outstanding == 0 then finish() end
end
