#!/usr/bin/env bash
# Load benchmark of the HTTP/1.1 front end with wrk: req/s and latency percentiles for the MLP
# demo model, seed API and V2 JSON, at concurrency 1, 8 and 64. Load generator and server share
# the machine, as in the figures of docs/performance.md. Auth is on (an API key per request,
# its rate limit checked); UP_ARGS=--no-auth measures without it.
#
#   bash benches/http-load.sh [seconds-per-run]      (needs wrk: apt-get install wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
source benches/up.sh

python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
ref = json.load(open("models/demo/breast-cancer-mlp/reference.json"))
spec_features = [l.strip().strip('",') for l in open("models/demo/breast-cancer-mlp/model.toml")
                 if l.startswith('  "')]
row = ref["rows"][0]
json.dump({"features": row}, open(f"{work}/seed.json", "w"))
json.dump({"inputs": [{"name": "input", "shape": [1, len(spec_features)], "datatype": "FP32",
                       "data": [row[f] for f in spec_features]}]}, open(f"{work}/v2.json", "w"))
PY

printf '| API | concurrency | req/s | p50 ms | p90 ms | p99 ms | non-2xx |\n|---|---:|---:|---:|---:|---:|---:|\n'
for api in seed v2; do
  case $api in
    seed) url=$node/api/v1/models/breast-cancer-mlp/predict ;;
    v2) url=$node/v2/models/breast-cancer-mlp/infer ;;
  esac
  for c in 1 8 64; do
    threads=$(( c < 2 ? 1 : 2 ))
    out=$(AUTH=$key BODY=$work/$api.json wrk -t$threads -c$c -d${secs}s --latency -s benches/wrk/post.lua "$url")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    pct() { awk -v p="$1" '$1 == p {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; printf "%.2f", v}' <<<"$out"; }
    non2xx=$(awk -F= '/non2xx/ {print $2}' <<<"$out")
    printf '| %s | %d | %.0f | %s | %s | %s | %s |\n' "$api" "$c" "$rps" "$(pct 50%)" "$(pct 90%)" "$(pct 99%)" "$non2xx"
  done
done
