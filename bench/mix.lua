-- Read/write mix over the preloaded keys: BENCH_WRITE_PCT % updates (PUT), the rest reads (GET).
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

bench.request(function()
  local path = "/configs/" .. bench.random_key() .. bench.query
  if math.random() * 100 < bench.write_pct then
    bench_seq = bench_seq + 1
    return bench.req("PUT", path, string.format('{"value":%s}', bench.value(bench_seq)))
  end
  return bench.req("GET", path)
end)
