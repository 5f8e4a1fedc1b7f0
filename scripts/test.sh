#!/usr/bin/env bash
# Sets everything up (system packages, .venv with test tools) and runs the whole test suite:
# lint, types, then pytest (real models, real loopback HTTP servers, real PulseAudio devices).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
.venv/bin/ruff check voice_agent tests scripts
.venv/bin/ruff format --check voice_agent tests scripts
.venv/bin/mypy
# pytest exits 5 when it collects nothing; that is a failure here, as any non-zero exit.
exec .venv/bin/python -m pytest "$@"
