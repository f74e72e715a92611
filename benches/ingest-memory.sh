#!/usr/bin/env bash
# Memory of one large feature ingest: `meridian up --no-auth` (release), one NDJSON body of
# patients rows (30 features each) posted to a node, the process's RSS sampled every 200 ms.
#
#   bash benches/ingest-memory.sh [megabytes]   (default 230; at most max_ingest_bytes, 256 MiB)
set -euo pipefail
cd "$(dirname "$0")/.."
mb=${1:-230}
source benches/release.sh
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
python3 - "$mb" "$work/rows.ndjson" <<'PY'
import json, random, sys
random.seed(1)
names = list(json.load(open("models/demo/breast-cancer-mlp/reference.json"))["rows"][0])
limit, size, i = int(sys.argv[1]) * 1_000_000, 0, 0
with open(sys.argv[2], "w") as f:
    while size < limit:
        row = {n: round(random.uniform(0, 100), 4) for n in names}
        row["patient_id"] = f"p{i}"
        line = json.dumps(row) + "\n"
        f.write(line); size += len(line); i += 1
print(f"{i} rows, {size / 1e6:.0f} MB", file=sys.stderr)
PY
"$target/meridian" up --no-auth --port 7650 --data-dir "$work/up" >"$work/up.log" 2>&1 &
pid=$!
pids+=("$pid")
for _ in $(seq 60); do curl -sf -m 2 http://127.0.0.1:7651/readyz >/dev/null && break; sleep 1; done
sleep 2
before=$(ps -o rss= -p "$pid")
echo 0 >"$work/peak"
(while kill -0 "$pid" 2>/dev/null; do
  r=$(ps -o rss= -p "$pid" || echo 0)
  [ "$r" -gt "$(cat "$work/peak")" ] && echo "$r" >"$work/peak"
  sleep 0.2
done) &
pids+=($!)
start=$(date +%s.%N)
curl -sf -m 600 -X POST http://127.0.0.1:7651/api/v1/features/patients/ingest \
  -H 'content-type: application/x-ndjson' --data-binary @"$work/rows.ndjson"
echo
end=$(date +%s.%N)
sleep 2
after=$(ps -o rss= -p "$pid")
printf 'RSS before %d MB, peak %d MB, after %d MB; ingest took %.1f s\n' \
  $((before / 1024)) $(($(cat "$work/peak") / 1024)) $((after / 1024)) "$(echo "$end - $start" | bc)"
