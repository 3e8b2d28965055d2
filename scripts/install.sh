#!/usr/bin/env bash
# Install mlx-specstream and what it needs on a fresh Linux or macOS machine.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(uname)" = "Linux" ] && ! [ -e /usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 ] \
   && ! [ -e /usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0 ]; then
  # The mlx[cpu] wheel links a reference BLAS; OpenBLAS makes fp32 matmuls ~30x faster.
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libopenblas0-pthread
fi

# Extras: convert/train pin torch==2.13.0 (a CPU build here; an open range may pull CUDA).
python -m pip install -q -e ".[${MLX_SPECSTREAM_EXTRAS:-convert,train,data,bench,test}]"
