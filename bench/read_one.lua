-- Warm reads of one key: GET /configs/{BENCH_KEY} (a static request, built once).
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

wrk.method = "GET"
wrk.path = "/configs/" .. bench.key .. bench.query
wrk.headers = bench.headers
