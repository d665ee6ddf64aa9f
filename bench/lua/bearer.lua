-- wrk script, scenario 3: GET <url> (e.g. /orders) with a fixed "Authorization: Bearer <JWT>".
--   wrk -t2 -c16 -d10s --latency -s bench/lua/bearer.lua http://127.0.0.1:3200/orders -- "$TOKEN"
-- The token comes from the first script arg, else env BEARER_TOKEN. Static request.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

function init(args)
  local token = args[1] or os.getenv("BEARER_TOKEN")
  if not token or token == "" then error("bearer.lua: pass the JWT as script arg or BEARER_TOKEN") end
  wrk.method = "GET"
  wrk.headers["Authorization"] = "Bearer " .. token
end

function done(summary, latency, requests)
  report("bearer", summary, latency)
end
