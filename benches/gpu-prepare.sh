#!/usr/bin/env bash
# Prepares the GPU figures for a device machine (see benches/gpu-device.sh), on this machine:
# release builds of the `runtimes` bench and the GPU parity tests, stripped, and the Vulkan
# loader's Debian package, all in .gpu/ (ignored by git; the device run carries it).
#
#   bash benches/gpu-prepare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
mkdir -p .gpu/gl
cargo build --release -p meridian-benches --bin runtimes -q
parity=$(cargo test --release -p meridian-models --test gpu_parity --no-run --message-format=json -q 2>/dev/null |
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "gpu_parity":
        print(m["executable"])')
strip -o .gpu/runtimes "$target/release/runtimes"
strip -o .gpu/gpu_parity "$parity"
# The device machine may lack the Vulkan loader; its NVIDIA driver brings the ICD.
lists=$(mktemp -d)
arch="-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=$lists"
mkdir -p "$lists/partial"
# shellcheck disable=SC2086
apt-get $arch update -qq >/dev/null && (cd .gpu/gl && apt-get $arch download -qq libvulkan1 >/dev/null) ||
  echo "could not download libvulkan1; the device run needs a Vulkan loader of its own" >&2
rm -rf "$lists"
du -sh .gpu/* .gpu/gl/* 2>/dev/null
echo "next: the device tool's run with carry [\".gpu\"] and: bash benches/gpu-device.sh"
