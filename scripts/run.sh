#!/usr/bin/env bash
# Sets everything up (system packages, .venv) and starts the agent; arguments go to voice-agent.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/voice-agent "$@"
