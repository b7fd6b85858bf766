-- wrk script: POST /configs with a key no other request uses. setup() gives every wrk
-- thread its own prefix (thread:set), request() appends a per-thread counter.
-- The user key comes from $USER_KEY.
local threads = 0
local run = tostring(os.time())

function setup(thread)
  threads = threads + 1
  thread:set("prefix", "w" .. run .. "-t" .. threads)
end

function init(args)
  n = 0
  userKey = os.getenv("USER_KEY") or "bench-user-key-0001"
end

function request()
  n = n + 1
  local body = '{"key":"' .. prefix .. '-' .. n .. '","value":{"n":' .. n .. ',"service":"benchmark","enabled":true}}'
  return wrk.format("POST", "/configs", { ["Content-Type"] = "application/json", ["X-User-Key"] = userKey }, body)
end
