#!/usr/bin/env bash
# Dynamic batching on the CPU: workers running each request alone (max_batch_rows = 1) against
# the default greedy batching (up to 1,024 rows of whatever is queued; max_queue_delay_us = 0),
# one node, one worker thread, tract, at concurrency 8 and 64:
#   - the demo MLP (30-64-32-2) over plaintext HTTP/1.1, where the front end sets the rate;
#   - a larger MLP (784-1024-1024-10, benches/src/bin/make_model.rs) over the native QUIC
#     protocol, where the model sets it.
#
#   bash benches/batching.sh [seconds-per-run]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
source benches/release.sh
[ -z "${NO_BUILD:-}" ] && cargo build --release -p meridian-benches --bin make_model -q
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
"$target/make_model" "$work/large" >/dev/null
"$target/meridian" certs --dir "$work/certs" >/dev/null
printf 'listen = "127.0.0.1:7370"\ndata_dir = "%s/control"\n[auth]\nenabled = false\n[tls]\nplaintext_http = true\n' "$work" >"$work/control.toml"
"$target/meridian" control --config "$work/control.toml" >"$work/control.log" 2>&1 &
pids+=($!)
sleep 1
push() { "$target/meridian" --control http://127.0.0.1:7370 models push "$@" --deploy >/dev/null; }
push models/demo/breast-cancer-mlp/model.onnx --name breast-cancer-mlp
push "$work/large/model.onnx" --name mlp-large
printf '| model | transport | max_batch_rows | concurrency | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n'
port=7371
for rows in 1 1024; do
  cat >"$work/node-$rows.toml" <<TOML
id = "batching-$rows"
listen = "127.0.0.1:$port"
control_url = "http://127.0.0.1:7370"
data_dir = "$work/node-$rows"
max_batch_rows = $rows
runtime = "cpu"
[tls]
cert = "$work/certs/node.pem"
key = "$work/certs/node.key"
plaintext_http = true
[auth]
enabled = false
TOML
  "$target/meridian" node --config "$work/node-$rows.toml" >"$work/node-$rows.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
  run() { # model transport url concurrency [loadgen args]
    local model=$1 transport=$2 url=$3 c=$4
    shift 4
    "$target/loadgen" --url "$url" --ca "$work/certs/ca.pem" --transport "$transport" --model "$model" \
      -c "$c" -d "$secs" --json "$@" |
      python3 -c "import json,sys; r=json.load(sys.stdin); print(f\"| $model | $transport | $rows | $c | {r['requests_per_s']:.0f} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | {r['p999_ms']:.2f} |\")"
  }
  for c in 8 64; do run breast-cancer-mlp http1 "http://127.0.0.1:$port" $c; done
  # QUIC is served on the TCP port's number over UDP, with TLS.
  for c in 8 64; do run mlp-large native "https://127.0.0.1:$port" $c --width 784; done
  kill "${pids[-1]}"
  port=$((port + 1))
done
