-- wrk script, scenario 2: POST /token, grant_type=refresh_token, client_secret_basic.
--   wrk -t2 -c16 -d10s --latency -s bench/lua/refresh.lua http://127.0.0.1:3100/token -- TOKENS_FILE THREADS [CLIENT_ID CLIENT_SECRET]
-- TOKENS_FILE: one refresh token per line (env REFRESH_TOKENS); THREADS must equal wrk -t
-- (wrk does not tell a thread how many threads there are); default 2.
--
-- Refresh tokens rotate (single use), so every request takes the next unused token.
-- No token is ever sent twice: the file is split into THREADS contiguous blocks and
-- thread `tid` only walks its own block (a thread using more than THREADS aborts the run).
-- wrk calls request() once on thread 0 before the run to check the request format;
-- that token is skipped, never sent.
--
-- Exhaustion: when a thread runs out of tokens it stops (wrk.thread:stop()) and hands
-- wrk one harmless filler request (GET FILLER_PATH, default
-- /.well-known/openid-configuration) that is normally never read. done() then prints
-- a WARNING: wrk divides by the full -d duration, so Requests/sec of such a run is
-- under-reported and the run must be repeated with a larger pool. Size the pool as
-- (expected req/s) x (duration) x 1.5 or more; tokens used are printed per run.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local tokens, pos = {}, 0
assigned, used, exhausted = 0, 0, 0      -- globals: read by done() via thread:get()

function init(args)
  local path = args[1] or os.getenv("REFRESH_TOKENS") or error("refresh.lua: TOKENS_FILE missing")
  local nthreads = tonumber(args[2] or os.getenv("WRK_THREADS") or "2")
  if tid >= nthreads then
    error(string.format("refresh.lua: thread %d but THREADS=%d; pass wrk -t as 2nd script arg", tid, nthreads))
  end
  local all = {}
  for line in io.lines(path) do
    if line ~= "" then all[#all + 1] = line end
  end
  local per = math.floor(#all / nthreads)
  local first = tid * per
  for i = 1, per do tokens[i] = all[first + i] end
  assigned = per
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
  wrk.headers["Authorization"] = basic_auth(args[3], args[4])
  filler = wrk.format("GET", os.getenv("FILLER_PATH") or "/.well-known/openid-configuration", {})
end

function request()
  pos = pos + 1
  if pos > assigned then
    if exhausted == 0 then wrk.thread:stop() end
    exhausted = exhausted + 1
    return filler
  end
  used = used + 1
  return wrk.format(nil, nil, nil, "grant_type=refresh_token&refresh_token=" .. tokens[pos])
end

function done(summary, latency, requests)
  report("refresh", summary, latency, function(threads)
    local u, avail, ex = 0, 0, 0
    for _, t in ipairs(threads) do
      u = u + t:get("used"); avail = avail + t:get("assigned"); ex = ex + t:get("exhausted")
    end
    local s = string.format("refresh pool: %d tokens taken (incl. 1 format check) of %d assigned\n", u, avail)
    if ex > 0 then
      s = s .. "WARNING: refresh token pool EXHAUSTED (" .. ex .. " filler requests); "
        .. "Requests/sec is under-reported, rerun with more tokens or a shorter -d\n"
    end
    return s
  end)
end
