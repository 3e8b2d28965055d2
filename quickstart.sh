#!/usr/bin/env bash
# Quick start: install, fetch and convert the default model, run the main demo.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/install.sh
python demos/compare.py "$@"
