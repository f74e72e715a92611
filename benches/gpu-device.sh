#!/usr/bin/env bash
# The GPU figures on a machine with a real GPU, from what benches/gpu-prepare.sh left in .gpu/:
# the parity tests on that GPU, then the runtimes table (tract against wgpu per batch size,
# matmul GFLOP/s against the device's f32 peak). Written to $OUT (the device tool's output
# folder) when it is set, else to .gpu/out. Takes about 3 minutes on an H100.
#
#   bash benches/gpu-device.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-.gpu/out}
mkdir -p "$out"
[ -x .gpu/runtimes ] || { echo "no .gpu/runtimes: run benches/gpu-prepare.sh first and carry .gpu" >&2; exit 2; }
if ! ldconfig -p | grep -q libvulkan.so.1; then
  for deb in .gpu/gl/*.deb; do [ -e "$deb" ] && dpkg -x "$deb" /; done
  ldconfig
fi
nvidia_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -e "$nvidia_icd" ] && ! ls /usr/share/vulkan/icd.d/nvidia* /etc/vulkan/icd.d/nvidia* >/dev/null 2>&1; then
  export VK_DRIVER_FILES=$nvidia_icd
fi
{ nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv 2>&1; nproc; } | tee "$out/machine.txt"
echo "== parity on the GPU"
MERIDIAN_REQUIRE_GPU=1 timeout 240 .gpu/gpu_parity --test-threads 4 --nocapture 2>&1 | tee "$out/parity.txt" | grep -E "adapter:|test result|FAILED|panicked" | sort | uniq -c
echo "== runtimes"
timeout 300 .gpu/runtimes 2>&1 | tee "$out/runtimes.md"
