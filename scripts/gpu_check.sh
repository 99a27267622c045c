#!/usr/bin/env bash
# What to run on a machine with a GPU (the `device` tool's machines), as one
# prepared script: build with CUDA, the CUDA and backend parity tests, the
# same under compute-sanitizer memcheck and racecheck, the GPU benchmark,
# and trials/s of the quickstart sweep on the GPU against the CPU. Prints
# everything; exits non-zero on the first failure. Every step has a time
# limit, so a hang costs minutes, not the device budget.
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
step() { echo "=== $*"; }
step build
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DMASKTUNE_CUDA=ON >/dev/null
timeout 420 cmake --build build-gpu -j"$(nproc)" --target masktune_tests bench_cuda masktune
step "CUDA, backend and resources tests"
(cd build-gpu && timeout 300 ./masktune_tests -tc='cuda:*,*device*,backend*,*resources*')
step "compute-sanitizer memcheck"
(cd build-gpu && timeout 300 compute-sanitizer --tool memcheck --error-exitcode 1 \
  ./masktune_tests -tc='cuda:*')
step "compute-sanitizer racecheck"
(cd build-gpu && timeout 300 compute-sanitizer --tool racecheck --error-exitcode 1 \
  ./masktune_tests -tc='cuda:*')
step bench_cuda
timeout 300 build-gpu/bench_cuda
step "trials/s: the quickstart sweep, --device cuda against --device cpu"
tmp=$(mktemp -d)
for device in cuda cpu; do
  start=$(date +%s.%N)
  timeout 300 build-gpu/masktune run configs/examples/quickstart.yaml --device "$device" \
    --db "$tmp/$device.db" >"$tmp/$device.log"
  end=$(date +%s.%N)
  python3 - "$tmp/$device.db" "$device" "$start" "$end" <<'PY'
import sqlite3, sys
db, device, start, end = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
n = sqlite3.connect(db).execute("select count(*) from trials where status = 'done'").fetchone()[0]
print(f"{device}: {n} trials in {end - start:.2f} s, {n / (end - start):.1f} trials/s")
PY
done
rm -rf "$tmp"
