#!/usr/bin/env bash
# Run the three peer scenarios once, bounded: starts provider.mjs and resource.mjs on
# loopback, mints the refresh-token pool, runs wrk, stops the two servers it started.
#   bench/peer/run.sh            env: DURATION=10s THREADS=2 CONNS=16 POOL=30000
#                                     PROVIDER_PORT=3100 RESOURCE_PORT=3200 OUT=bench/out/peer
set -euo pipefail
cd "$(dirname "$0")"
DURATION=${DURATION:-10s}; THREADS=${THREADS:-2}; CONNS=${CONNS:-16}; POOL=${POOL:-30000}
PP=${PROVIDER_PORT:-3100}; RP=${RESOURCE_PORT:-3200}; OUT=${OUT:-../out/peer}
mkdir -p "$OUT"
[ -d node_modules ] || npm ci --no-audit --no-fund

pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
NODE_ENV=production node provider.mjs "$PP" >"$OUT/provider.log" 2>&1 & pids+=($!)
NODE_ENV=production node resource.mjs "$RP" "http://127.0.0.1:$PP" >"$OUT/resource.log" 2>&1 & pids+=($!)
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$PP/jwks" >/dev/null && break; sleep 0.2; done

WRK=(wrk "-t$THREADS" "-c$CONNS" "-d$DURATION" --latency)
"${WRK[@]}" -s ../lua/client_credentials.lua "http://127.0.0.1:$PP/token" | tee "$OUT/client_credentials.txt"

node mint_refresh.mjs "$POOL" "$OUT/refresh.tokens.txt" "http://127.0.0.1:$PP" 32
"${WRK[@]}" -s ../lua/refresh.lua "http://127.0.0.1:$PP/token" -- "$OUT/refresh.tokens.txt" "$THREADS" | tee "$OUT/refresh.txt"

TOKEN=$(curl -fs -u bench:bench-secret -d 'grant_type=client_credentials&scope=order:view' \
  "http://127.0.0.1:$PP/token" | node -pe 'JSON.parse(require("fs").readFileSync(0)).access_token')
"${WRK[@]}" -s ../lua/bearer.lua "http://127.0.0.1:$RP/orders" -- "$TOKEN" | tee "$OUT/bearer.txt"

grep -h '^RESULT' "$OUT"/client_credentials.txt "$OUT"/refresh.txt "$OUT"/bearer.txt
