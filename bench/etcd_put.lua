-- Unique-key puts through etcd's JSON gateway: POST /v3/kv/put of key
-- "{BENCH_PREFIX}-t{tid}-{n}" with the same value write_unique.lua creates, the peer of
-- write_unique.lua (every put is committed by etcd's Raft log and fsynced before it answers).
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "etcd_common.lua")

bench.request(function()
  bench_seq = bench_seq + 1
  local key = string.format("%s-t%d-%d", bench.prefix, tid, bench_seq)
  local body = string.format('{"key":"%s","value":"%s"}', bench.base64(key), bench.base64(bench.value(bench_seq)))
  return bench.req("POST", "/v3/kv/put", body)
end)
