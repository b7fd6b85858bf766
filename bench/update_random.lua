-- Updates of the preloaded keys: PUT /configs/{random preloaded key} with a new value.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

bench.request(function()
  bench_seq = bench_seq + 1
  local body = string.format('{"value":%s}', bench.value(bench_seq))
  return bench.req("PUT", "/configs/" .. bench.random_key() .. bench.query, body)
end)
