-- wrk script, scenario 1: POST /token, grant_type=client_credentials, client_secret_basic.
--   wrk -t2 -c16 -d10s --latency -s bench/lua/client_credentials.lua http://127.0.0.1:3100/token [-- CLIENT_ID CLIENT_SECRET SCOPE]
-- Args default to env CLIENT_ID / CLIENT_SECRET / SCOPE, then bench / bench-secret / order:view.
-- The request is static (built once per thread), so wrk does not call Lua per request.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

function init(args)
  local scope = args[3] or os.getenv("SCOPE") or "order:view"
  wrk.method = "POST"
  wrk.body = "grant_type=client_credentials&scope=" .. scope:gsub(":", "%%3A"):gsub(" ", "+")
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
  wrk.headers["Authorization"] = basic_auth(args[1], args[2])
end

function done(summary, latency, requests)
  report("client_credentials", summary, latency)
end
