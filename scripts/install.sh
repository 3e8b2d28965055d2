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

if [ "${MLX_SPECSTREAM_BROWSER_TESTS:-0}" = "1" ] && [ "$(uname)" = "Linux" ] \
   && command -v apt-get >/dev/null \
   && ! { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }; then
  # Debian's headless browser and its WebDriver, for the chat page's test
  # (tests/test_server.py; it skips where they are missing). CI asks for them;
  # the Quick start does not need them.
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  { $SUDO apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver; } \
    || echo "chromium not installed: the chat page's browser test will skip" >&2
fi

# Extras: convert/train pin torch==2.13.0 (a CPU build here; an open range may pull CUDA).
python -m pip install -q -e ".[${MLX_SPECSTREAM_EXTRAS:-convert,train,data,bench,test}]"
