-- Warm serializable reads of one key through etcd's JSON gateway: POST /v3/kv/range of
-- BENCH_KEY (a static request, built once), the peer of read_one.lua.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "etcd_common.lua")

wrk.method = "POST"
wrk.path = "/v3/kv/range"
wrk.headers = bench.headers
wrk.body = string.format('{"key":"%s","serializable":true}', bench.base64(bench.key))
