-- wrk script: refresh-rate PROBE for sizing a refresh-token pool (used by bench/run.py
-- before the measured refresh run; not a benchmark scenario itself).
--   wrk -t2 -c16 -d3s -s bench/lua/refresh_probe.lua http://127.0.0.1:PORT/token -- TOKENS_FILE THREADS [CLIENT_ID CLIENT_SECRET]
-- Same requests as refresh.lua (one unused token per request, file split per thread), but
-- each thread also notes the monotonic time of its first request and of its last
-- response, so the rate is right even when the pool runs out before -d ends (wrk's own
-- Requests/sec divides by the full -d). Prints:
--   PROBE rate=<responses/s summed over threads> responses=N exhausted=0|1
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "refresh.lua")

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_probe_timespec;
int clock_gettime(int clk_id, bench_probe_timespec *tp);
]]
local ts = ffi.new("bench_probe_timespec")
local function now()                      -- CLOCK_MONOTONIC, seconds
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
end

t_first, t_last, got = 0, 0, 0           -- globals: read by done() via thread:get()

local refresh_request, count_response, base_setup = request, response, setup
local probe_threads = {}                  -- common.lua's thread list is local to it

function setup(thread)
  base_setup(thread)
  table.insert(probe_threads, thread)
end

function request()
  if t_first == 0 then t_first = now() end
  return refresh_request()
end

function response(status, headers, body)
  count_response(status, headers, body)
  got = got + 1
  t_last = now()
end

function done(summary, latency, requests)
  local rate, n, ex = 0, 0, 0
  for _, t in ipairs(probe_threads) do
    local span = t:get("t_last") - t:get("t_first")
    local g = t:get("got")
    if span > 0 then rate = rate + g / span end
    n = n + g
    ex = ex + t:get("exhausted")
  end
  report("refresh_probe", summary, latency)
  io.write(string.format("PROBE rate=%.1f responses=%d exhausted=%d\n", rate, n, ex > 0 and 1 or 0))
end
