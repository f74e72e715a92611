# Sourced by the loadgen benchmarks: build the release `meridian` and `loadgen` (skipped with
# NO_BUILD=1, to reuse binaries built earlier). Sets: target (the release directory).
if [ -z "${NO_BUILD:-}" ]; then
  cargo build --release --bin meridian -q
  cargo build --release -p meridian-benches --bin loadgen -q
fi
target=${CARGO_TARGET_DIR:-target}/release
