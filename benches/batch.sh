#!/usr/bin/env bash
# Batch job benchmark: rows/s end to end (file in → file out: upload, score, checkpoint, write,
# download) for the MLP demo model on CPU, then real-time p99 with and without a job running.
# Load generator and server share the machine, as in the figures of docs/performance.md.
#
#   bash benches/batch.sh [rows] [seconds-per-wrk-run]      (needs wrk and python3)
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-1000000}
secs=${2:-10}
source benches/up.sh
export MERIDIAN_NODE=$node

python3 - "$work" "$rows" <<'PY'
import json, sys
work, n = sys.argv[1], int(sys.argv[2])
ref = json.load(open("models/demo/breast-cancer-mlp/reference.json"))
names = list(ref["rows"][0].keys())
with open(f"{work}/rows.csv", "w") as f:
    f.write("id," + ",".join(names) + "\n")
    for i in range(n):
        base = ref["rows"][i % len(ref["rows"])]
        s = 1.0 + (i % 997) * 1e-4
        f.write(f"r{i}," + ",".join(repr(base[k] * s) for k in names) + "\n")
json.dump({"features": ref["rows"][0]}, open(f"{work}/seed.json", "w"))
PY
size=$(du -h "$work/rows.csv" | cut -f1)

# End to end: the CLI uploads, follows, downloads.
start=$(date +%s.%N)
"$bin" batch submit "$work/rows.csv" --model breast-cancer-mlp --output "$work/out.csv" > "$work/summary.txt"
end=$(date +%s.%N)
cat "$work/summary.txt"
out_rows=$(($(wc -l < "$work/out.csv") - 1))
[ "$out_rows" -eq "$rows" ] || { echo "output has $out_rows rows, expected $rows" >&2; exit 1; }
e2e=$(python3 -c "print(f'{$rows / ($end - $start):,.0f}')")
echo "end to end: $rows rows ($size CSV) in $(python3 -c "print(f'{$end - $start:.2f}')") s = $e2e rows/s"

wrk_p99() {
  out=$(BODY=$work/seed.json wrk -t2 -c8 -d${secs}s --latency -s benches/wrk/post.lua \
    "$node/api/v1/models/breast-cancer-mlp/predict")
  rps=$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out"); p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  non2xx=$(awk -F= '/non2xx/ {print $2}' <<<"$out")
  echo "$rps req/s, p50 $p50, p99 $p99, non-2xx ${non2xx:-0}"
}
echo "real time, seed API, concurrency 8, no job:   $(wrk_p99)"
# Jobs to outlast the wrk run (uploaded, not followed; they run one after another).
for i in 1 2 3; do
  "$bin" --json batch submit "$work/rows.csv" --model breast-cancer-mlp > "$work/job$i.json"
done
echo "real time, seed API, concurrency 8, jobs running: $(wrk_p99)"
for i in 1 2 3; do
  job=$(python3 -c "import json; print(json.load(open('$work/job$i.json'))['id'])")
  "$bin" --json batch status "$job" | python3 -c "
import json, sys; s = json.load(sys.stdin)
print(f\"job $i after the run: {s['state']}, {s['rows_done']} of {s['total_rows']} rows done\")"
done
