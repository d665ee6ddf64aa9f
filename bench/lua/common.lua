-- Shared helpers for the bench wrk scripts (loaded with dofile by each script).
-- Defines setup()/response()/done(): numbers each thread (global `tid`, 0-based),
-- counts 2xx and non-2xx responses per thread and prints the totals in done(),
-- plus one machine-readable line:
--   RESULT name=... req_s=... p50_ms=... p90_ms=... p99_ms=... requests=... non2xx=... socket_errors=...
-- Note: defining response() makes wrk parse headers and body of every response;
-- this costs the same for both servers under comparison.

local threads = {}

function setup(thread)                    -- main Lua state, once per thread
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

ok2xx, non2xx, sample = 0, 0, nil         -- per-thread Lua state

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok2xx = ok2xx + 1
  else
    non2xx = non2xx + 1
    if not sample then sample = status .. " " .. string.sub(body or "", 1, 200) end
  end
end

local function b64(s)                     -- base64 (RFC 4648, with padding)
  local chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  return ((s:gsub(".", function(x)
    local r, b = "", x:byte()
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and "1" or "0") end
    return r
  end) .. "0000"):gsub("%d%d?%d?%d?%d?%d?", function(x)
    if #x < 6 then return "" end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
    return chars:sub(c + 1, c + 1)
  end) .. ({ "", "==", "=" })[#s % 3 + 1])
end

-- Basic auth header value from args/env (client_secret_basic). The id and secret are
-- used as given (RFC 6749 2.3.1 form-encoding is a no-op for the bench's [A-Za-z0-9-] values).
function basic_auth(id, secret)
  id = id or os.getenv("CLIENT_ID") or "bench"
  secret = secret or os.getenv("CLIENT_SECRET") or "bench-secret"
  return "Basic " .. b64(id .. ":" .. secret)
end

-- extra(threads) may return a string appended to the report (e.g. pool usage).
function report(name, summary, latency, extra)
  local ok, bad, samples = 0, 0, {}
  for _, t in ipairs(threads) do
    ok = ok + t:get("ok2xx")
    bad = bad + t:get("non2xx")
    local s = t:get("sample")
    if s then table.insert(samples, s) end
  end
  local e = summary.errors
  local sock = e.connect + e.read + e.write + e.timeout
  local req_s = summary.requests / (summary.duration / 1e6)
  io.write(string.format("%s: %d responses counted by script: 2xx=%d non-2xx=%d; socket errors=%d\n",
    name, ok + bad, ok, bad, sock))
  for _, s in ipairs(samples) do io.write("  first non-2xx of a thread: ", s, "\n") end
  if extra then io.write(extra(threads) or "") end
  io.write(string.format(
    "RESULT name=%s req_s=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f requests=%d non2xx=%d socket_errors=%d\n",
    name, req_s, latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, summary.requests, bad, sock))
end
