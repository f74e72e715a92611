#!/usr/bin/env bash
# Dynamic batching on the CPU: the MLP at concurrency 64 (and 8), with the workers running each
# request alone (max_batch_rows = 1) against the default greedy batching (up to 1,024 rows of
# whatever is queued; max_queue_delay_us = 0). HTTP/1.1, plaintext, one node, one worker thread.
#
#   bash benches/batching.sh [seconds-per-run]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
source benches/release.sh
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
printf 'listen = "127.0.0.1:7370"\ndata_dir = "%s/control"\n[auth]\nenabled = false\n[tls]\nplaintext_http = true\n' "$work" >"$work/control.toml"
"$target/meridian" control --config "$work/control.toml" >"$work/control.log" 2>&1 &
pids+=($!)
sleep 1
"$target/meridian" --control http://127.0.0.1:7370 models push models/demo/breast-cancer-mlp/model.onnx \
  --name breast-cancer-mlp --deploy >/dev/null
printf '| max_batch_rows | concurrency | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms |\n|---:|---:|---:|---:|---:|---:|---:|\n'
port=7371
for rows in 1 1024; do
  cat >"$work/node-$rows.toml" <<TOML
id = "batching-$rows"
listen = "127.0.0.1:$port"
control_url = "http://127.0.0.1:7370"
data_dir = "$work/node-$rows"
max_batch_rows = $rows
[tls]
plaintext_http = true
[auth]
enabled = false
TOML
  "$target/meridian" node --config "$work/node-$rows.toml" >"$work/node-$rows.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
  for c in 8 64; do
    "$target/loadgen" --url "http://127.0.0.1:$port" --transport http1 -c $c -d "$secs" --json |
      python3 -c "import json,sys; r=json.load(sys.stdin); print(f\"| $rows | $c | {r['requests_per_s']:.0f} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | {r['p999_ms']:.2f} |\")"
  done
  kill "${pids[-1]}"
  port=$((port + 1))
done
