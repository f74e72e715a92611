# Sourced by the load benchmarks: build the release binary, start `meridian up` (control on
# $port, nodes from $port+1) in a temp directory removed on exit, wait until it is up.
# $UP_ARGS goes to `meridian up` (e.g. --no-auth). With auth on, a `bench` API key is made whose
# predict limit (100M/s) is checked on every request but never reached.
# Sets: bin, work, port, pid, node (the first node's URL), key (empty with --no-auth).
command -v wrk >/dev/null || { echo "needs wrk (Debian: apt-get install wrk)" >&2; exit 1; }
cargo build --release --bin meridian -q
bin=${CARGO_TARGET_DIR:-target}/release/meridian
work=$(mktemp -d)
port=7170
# shellcheck disable=SC2086
"$bin" up --data-dir "$work/up" --port $port ${UP_ARGS:-} >"$work/up.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 300); do grep -q "meridian is up" "$work/up.log" && break; sleep 0.1; done
grep -q "meridian is up" "$work/up.log" || { cat "$work/up.log"; exit 1; }
node=http://127.0.0.1:$((port + 1))
key=""
demo=$(sed -n 's/^ *export MERIDIAN_API_KEY=//p' "$work/up.log")
if [ -n "$demo" ]; then
  key=$(MERIDIAN_API_KEY=$demo "$bin" --control "http://127.0.0.1:$port" keys create --name bench \
        --scope predict --predict-per-second 100000000 2>/dev/null)
  for _ in $(seq 1 100); do
    curl -sf -o /dev/null -H "authorization: Bearer $key" "$node/v2/models/breast-cancer-mlp" && break
    sleep 0.1
  done
fi
