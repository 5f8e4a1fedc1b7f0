#!/usr/bin/env bash
# Installs everything voice-agent needs on Debian, Ubuntu or Raspberry Pi OS:
# system packages with apt (only those missing), then a virtual environment in .venv
# with the project and its Python dependencies. Safe to run again; quick when nothing changed.
#   scripts/setup.sh          what the agent needs
#   scripts/setup.sh test     plus the test tools and the PulseAudio virtual-room packages
#   scripts/setup.sh --no-local   without the embedded LLM (no llama.cpp build: minutes on x86,
#                                 far longer on a Raspberry Pi), for an agent that always uses
#                                 a server (Ollama on the LAN, OpenRouter); the tests need it
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
want_local=1
for arg in "$@"; do
  case "$arg" in
    test) want_test=1 ;;
    --no-local) want_local=0 ;;
    *) echo "setup: unknown argument '$arg' (use: test, --no-local)" >&2; exit 2 ;;
  esac
done

# Debian package names: PortAudio for sounddevice, venv/pip for Python itself.
packages=(python3 python3-venv python3-pip libportaudio2)
# A C++ compiler and CMake build the embedded LLM server (llama-cpp-python) from source;
# everything else installs from wheels (x86_64 and aarch64), so --no-local needs neither.
[ $want_local = 1 ] && packages+=(build-essential cmake)
if [ $want_test = 1 ]; then
  # PulseAudio null sinks are the "virtual room" the end-to-end tests speak and listen in.
  packages+=(pulseaudio pulseaudio-utils libasound2-plugins)
  # systemd-analyze checks the unit `voice-agent service install` writes (nothing is started)
  packages+=(systemd)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# A python3 that already has venv and pip (pyenv, a distribution build) needs no apt package.
if command -v python3 >/dev/null && python3 -c 'import venv, ensurepip' 2>/dev/null; then
  missing=("${missing[@]/python3-venv}"); missing=("${missing[@]/python3-pip}")
  missing=("${missing[@]/python3}")
fi
read -r -a missing <<< "${missing[*]}"
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "setup: installing system packages: ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "setup: voice-agent needs Python 3.11 or newer; this is $(python3 --version)" >&2; exit 1; }

[ -x .venv/bin/python ] || python3 -m venv .venv
# "local" is the embedded LLM (llama.cpp server + SmolLM2), the default when no endpoint is
# configured. llama-cpp-python compiles from source: GGML_NATIVE=OFF makes a build that runs on
# any CPU of this architecture, not only this one; pip caches the built wheel for next time.
extras=()
[ $want_local = 1 ] && extras+=(local)
# "wake" is the wake word (pymicro-wakeword): its wheels are for 64-bit Linux with glibc 2.35+
# (Debian 12, Ubuntu 22.04, Raspberry Pi OS bookworm 64-bit). Elsewhere the agent works
# without it and --wake-word says why it cannot listen for one.
if .venv/bin/python -c 'import platform, sys, sysconfig
glibc = tuple(int(n) for n in (platform.libc_ver()[1] or "0").split(".")[:2])
sys.exit(not (sysconfig.get_platform() in ("linux-x86_64", "linux-aarch64") and glibc >= (2, 35)))'
then
  extras+=(wake)
else
  echo "setup: no wake word on this system (pymicro-wakeword needs 64-bit Linux with" \
    "glibc 2.35+); everything else works" >&2
fi
[ $want_test = 1 ] && extras+=(test)
spec="$(IFS=,; echo "[${extras[*]}]")"
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
# Reinstall only when the project's dependency list or the extras changed.
stamp=".venv/.voice-agent-installed"
want="$(cat pyproject.toml requirements/end-of-turn.txt | sha256sum | cut -d' ' -f1) $spec"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  building=""
  [ $want_local = 1 ] && building=" (the first time builds llama.cpp: about 7 minutes on 2 cores)"
  echo "setup: installing Python packages into .venv$building" >&2
  .venv/bin/python -m pip install --quiet --upgrade pip >&2
  .venv/bin/python -m pip install --quiet -e ".$spec" >&2
  # The end-of-turn model's wheel, without its dependencies (see the file for why).
  .venv/bin/python -m pip install --quiet --no-deps --require-hashes \
    -r requirements/end-of-turn.txt >&2
  echo "$want" > "$stamp"
fi
