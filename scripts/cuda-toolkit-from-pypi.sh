#!/usr/bin/env bash
# Builds the `cuda` feature on a machine with no GPU and no CUDA toolkit (as these sessions'
# machines are): assembles the parts of CUDA 13.0 that the build needs from NVIDIA's PyPI
# wheels into PREFIX (default /usr/local/cuda, the path dfdx then bakes in for NVRTC's
# includes, which the H200 machines also have), plus a link-time stub of the driver
# library (libcuda.so.1 comes with the GPU's driver) and, in PREFIX/stub-bin, an
# `nvidia-smi` that names the target GPU's compute capability for dfdx's build script.
# It refuses a PREFIX that already holds a toolkit. Then:
#   export CUDA_ROOT=PREFIX PATH=PREFIX/bin:PREFIX/stub-bin:$PATH CUDA_COMPUTE_CAP=90
#   scripts/cuda.sh build --release -p smartmixed-cli --features cuda
# and run the binary on the GPU machine with LD_LIBRARY_PATH naming its CUDA 13 libraries.
# Usage: scripts/cuda-toolkit-from-pypi.sh [PREFIX] [COMPUTE_CAP, e.g. 9.0]
set -euo pipefail
prefix=${1:-/usr/local/cuda}
cap=${2:-9.0}
if [ -e "$prefix/bin/nvcc" ]; then
  echo "$prefix already holds a CUDA toolkit (bin/nvcc); give another PREFIX" >&2
  exit 2
fi
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
pip_get() {
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$wheels" "$@"
}
# nvcc and NVVM (dfdx compiles its .cu kernels to PTX), the runtime headers (cuda.h,
# cuda_fp16.h), CCCL, and the libraries cudarc links: NVRTC, cuBLAS(Lt), cuRAND.
pip_get "nvidia-cuda-nvcc>=13.0,<13.1" "nvidia-nvvm>=13.0,<13.1" "nvidia-cuda-crt>=13.0,<13.1" \
  "nvidia-cuda-runtime>=13.0,<13.1" "nvidia-cuda-cccl>=13.0,<13.1" \
  "nvidia-cuda-nvrtc>=13.0,<13.1" "nvidia-cublas>=13.0,<13.1" "nvidia-curand==10.4.0.35"
mkdir -p "$wheels/x" "$prefix"
for w in "$wheels"/*.whl; do python3 -m zipfile -e "$w" "$wheels/x"; done
cp -a "$wheels"/x/nvidia/cu13/. "$prefix"/
chmod +x "$prefix"/bin/* "$prefix"/nvvm/bin/*
ln -sfn lib "$prefix/lib64"
for l in libcublas.so.13 libcublasLt.so.13 libnvrtc.so.13 libcurand.so.10 libcudart.so.13; do
  ln -sf "$l" "$prefix/lib/${l%%.so*}.so"
done
# The driver API's symbols, as cudarc 0.9 declares them, in a stub for the linker only.
sys=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.9.15/src/driver/sys.rs | head -n 1)
grep -ohE 'pub fn cu[A-Za-z0-9_]+' "$sys" | sort -u | sed 's/pub fn \(.*\)/void \1(void) {}/' \
  > "$wheels/stub.c"
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$prefix/lib/libcuda.so" "$wheels/stub.c"
mkdir -p "$prefix/stub-bin"
printf '#!/bin/sh\necho compute_cap\necho %s\n' "$cap" > "$prefix/stub-bin/nvidia-smi"
chmod +x "$prefix/stub-bin/nvidia-smi"
"$prefix/bin/nvcc" --version | tail -n 1
