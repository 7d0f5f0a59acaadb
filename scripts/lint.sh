#!/usr/bin/env bash
# Static checks (seconds): ruff on the code, npe2 on the installed napari manifest. Fails on any error.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/ruff ] && [ -x .venv/bin/npe2 ] || bash scripts/setup.sh
.venv/bin/ruff check src tests benchmarks
.venv/bin/npe2 validate napari-dmd
