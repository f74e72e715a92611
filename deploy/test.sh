#!/usr/bin/env bash
# Every check CI runs, on a fresh machine: installs what the tests need when it is missing and
# it can, then `cargo fmt --check`, `cargo clippy -D warnings` and all tests.
#
#   bash deploy/test.sh
#
# CARGO_TARGET_DIR is honoured (reuse a warm target directory to save ~10 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
target=${CARGO_TARGET_DIR:-$root/target}

say() { printf '\n== %s\n' "$*"; }

# --- system packages --------------------------------------------------------------------------
# What the tests need from the OS, as "command:debian-package".
needs=("python3:python3" "curl:curl" "redis-server:redis-server")
missing=()
for need in "${needs[@]}"; do
  command -v "${need%%:*}" >/dev/null 2>&1 || missing+=("${need##*:}")
done
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then missing+=("python3-venv"); fi
# The GPU parity tests run on Mesa's lavapipe (a software Vulkan driver) when there is no GPU.
if ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then missing+=("mesa-vulkan-drivers"); fi
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1 '; then missing+=("libvulkan1"); fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "The tests need these packages: ${missing[*]}" >&2
    echo "Install them (Debian/Ubuntu: sudo apt-get install ${missing[*]}) and run this again." >&2
    exit 1
  fi
fi

# --- Python client used by the compatibility tests ---------------------------------------------
venv="$target/test-venv"
if ! "$venv/bin/python" -c 'import tritonclient.http, numpy, aioquic' >/dev/null 2>&1; then
  say "creating $venv (tritonclient for the Open Inference Protocol tests, aioquic for HTTP/3)"
  mkdir -p "$target"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r deploy/test-requirements.txt
fi
export MERIDIAN_TEST_PYTHON="$venv/bin/python"
# The GPU tests must run here, not skip: without an adapter they fail.
export MERIDIAN_REQUIRE_GPU=1

# --- Rust -------------------------------------------------------------------------------------
say "cargo fmt --check"
cargo fmt --all --check

say "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

say "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
  cargo test --workspace --locked --doc
else
  echo "(cargo-nextest not found: using cargo test; nextest adds per-test timeouts)"
  cargo test --workspace --locked --no-fail-fast
fi
say "all checks passed"
