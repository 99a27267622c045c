#!/usr/bin/env bash
# What to run on a machine with a GPU (the `device` tool's machines): build
# with CUDA, run the CUDA tests, the same under compute-sanitizer memcheck,
# and the GPU benchmark. Prints everything; exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DMASKTUNE_CUDA=ON >/dev/null
cmake --build build-gpu -j"$(nproc)" --target masktune_tests bench_cuda masktune
(cd build-gpu && ./masktune_tests -tc='cuda:*,*device*')
(cd build-gpu && compute-sanitizer --tool memcheck --error-exitcode 1 ./masktune_tests -tc='cuda:*')
build-gpu/bench_cuda
