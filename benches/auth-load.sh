#!/usr/bin/env bash
# What auth and rate limiting add to a request on the HTTP/1.1 front end: seed API predict on
# the MLP demo model with wrk at concurrency $C (64), auth off (`meridian up --no-auth`, no
# credential) against auth on (an API key on every request, its token bucket checked on every
# request but never empty), in alternating runs so drift hits both alike. Besides req/s and
# latency it reports the server's CPU time per request (utime + stime of the `meridian up`
# process over the run / requests answered), which other load on the machine disturbs less.
#
#   bash benches/auth-load.sh [seconds-per-run] [rounds]      (needs wrk: apt-get install wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
rounds=${2:-3}
c=${C:-64}
body=$(mktemp)
trap 'rm -f "$body"' EXIT
python3 - "$body" <<'PY'
import json, sys
ref = json.load(open("models/demo/breast-cancer-mlp/reference.json"))
json.dump({"features": ref["rows"][0]}, open(sys.argv[1], "w"))
PY

run() {
  local mode=$1
  (
    UP_ARGS=""
    [ "$mode" = off ] && UP_ARGS=--no-auth
    # shellcheck source=benches/up.sh
    source benches/up.sh
    url=$node/api/v1/models/breast-cancer-mlp/predict
    AUTH=$key BODY=$body wrk -t2 -c"$c" -d3s -s benches/wrk/post.lua "$url" >/dev/null   # warm up
    cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
    before=$(cpu)
    out=$(AUTH=$key BODY=$body wrk -t2 -c"$c" -d"${secs}s" --latency -s benches/wrk/post.lua "$url")
    after=$(cpu)
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    us=$(awk -v t=$((after - before)) -v n="$requests" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", t / hz * 1e6 / n}')
    pct() { awk -v p="$1" '$1 == p {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; printf "%.2f", v}' <<<"$out"; }
    non2xx=$(awk -F= '/non2xx/ {print $2}' <<<"$out")
    printf '| %s | %d | %.0f | %s | %s | %s | %s |\n' "$mode" "$c" "$rps" "$(pct 50%)" "$(pct 99%)" "$us" "$non2xx"
  )
}

printf '| auth | concurrency | req/s | p50 ms | p99 ms | server CPU µs/req | non-2xx |\n|---|---:|---:|---:|---:|---:|---:|\n'
for _ in $(seq 1 "$rounds"); do
  run off
  run on
done
