# Sourced by the load benchmarks: build the release binary, start `meridian up` (control on
# $port, nodes from $port+1) in a temp directory removed on exit, wait until it is up.
# Sets: bin, work, port, pid, node (the first node's URL).
command -v wrk >/dev/null || { echo "needs wrk (Debian: apt-get install wrk)" >&2; exit 1; }
cargo build --release --bin meridian -q
bin=${CARGO_TARGET_DIR:-target}/release/meridian
work=$(mktemp -d)
port=7170
"$bin" up --data-dir "$work/up" --port $port >"$work/up.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 300); do grep -q "meridian is up" "$work/up.log" && break; sleep 0.1; done
grep -q "meridian is up" "$work/up.log" || { cat "$work/up.log"; exit 1; }
node=http://127.0.0.1:$((port + 1))
