-- Warm reads spread over the preloaded keys: GET /configs/{random preloaded key}.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

bench.request(function()
  return bench.req("GET", "/configs/" .. bench.random_key() .. bench.query)
end)
