#!/usr/bin/env bash
# Sets everything up (system packages, .venv with test tools) and runs the whole test suite:
# lint, types, then pytest (real models, real loopback HTTP servers, real PulseAudio devices).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
.venv/bin/ruff check voice_agent tests scripts
.venv/bin/ruff format --check voice_agent tests scripts
.venv/bin/mypy
# The live tests speak and listen in PulseAudio null sinks (a virtual room): start a daemon
# unless one answers. As root it warns that it is meant for users, and works.
pactl info >/dev/null 2>&1 || pulseaudio -D --exit-idle-time=-1 --system=false 2>/dev/null || true
# pytest exits 5 when it collects nothing; that is a failure here, as any non-zero exit.
exec .venv/bin/python -m pytest "$@"
