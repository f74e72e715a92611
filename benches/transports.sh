#!/usr/bin/env bash
# Load benchmark of the node's front doors with the Rust load generator (benches/src/bin/loadgen.rs):
# HTTP/1.1 over TLS, HTTP/3 and native QUIC, unary at concurrency 1, 8 and 64 (closed loop), an
# open-loop run at a fixed rate, and streams (rows/s). The MLP demo model on a local mesh
# (`meridian up --https --no-auth`: auth's own cost is measured by benches/auth-load.sh); load generator and server share the machine, as in docs/performance.md.
#
#   bash benches/transports.sh [seconds-per-run]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
source benches/release.sh
work=$(mktemp -d)
port=7270
"$target/meridian" up --https --no-auth --data-dir "$work/up" --port $port >"$work/up.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 300); do grep -q "meridian is up" "$work/up.log" && break; sleep 0.1; done
grep -q "meridian is up" "$work/up.log" || { cat "$work/up.log"; exit 1; }
lg() { "$target/loadgen" --url "https://127.0.0.1:$((port + 1))" --ca "$work/up/certs/ca.pem" -d "$secs" "$@"; }

printf '| transport | API | mode | concurrency | req/s | rows/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | failed |\n'
printf '|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n'
for t in http1 h3 native; do
  for c in 1 8 64; do lg --transport $t -c $c; done
done
lg --transport http1 --api v2 -c 64
lg --transport h3 --api v2 -c 64
for t in http1 h3 native; do lg --transport $t --rate 5000 -c 256; done
for t in http1 h3 native; do lg --transport $t --stream -c 4 --chunk-rows 256; done
