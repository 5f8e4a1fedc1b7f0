#!/usr/bin/env bash
# Proves the install on 64-bit ARM (Raspberry Pi OS bookworm arm64) without a Pi:
#   1. builds a Debian bookworm arm64 root from Debian's own packages (debootstrap),
#   2. runs it under emulation: qemu-aarch64 registered with the kernel's binfmt_misc (the
#      "F" flag: the host's emulator serves the chroot), the root entered with chroot. proot
#      (-q qemu-aarch64-static, no privileges) was tried first: its proot 5.1 cannot stat
#      directories the guest has just made (glibc 2.36's statx), so python3 -m venv fails there;
#   3. inside it, runs the README's set-up (scripts/setup.sh --no-local: the embedded LLM's
#      llama.cpp build would take hours under emulation; a Pi that uses a server skips it too),
#   4. inside it, one spoken turn end to end with the bundled models (a public clip in, the
#      reply spoken to a WAV) against a scripted LLM on loopback, and checks what was heard and
#      what was said back (Whisper on arm64 transcribes the reply's WAV).
# Prints each step's wall time. Emulated times are NOT Raspberry Pi times: qemu runs ARM code
# several times slower than a Pi 4 or 5 runs it natively.
#   scripts/check_arm64.sh            reuses the Debian root if one was built (the project is
#                                     always copied afresh, with a new .venv)
#   scripts/check_arm64.sh --fresh    builds the Debian root again too
# Needs root (or sudo): debootstrap, binfmt_misc, chroot and the mounts inside it.
set -euo pipefail
cd "$(dirname "$0")/.."

fresh=0
for arg in "$@"; do
  case "$arg" in
    --fresh) fresh=1 ;;
    *) echo "check_arm64: unknown argument '$arg' (use: --fresh)" >&2; exit 2 ;;
  esac
done

root="${ARM64_ROOT:-/var/tmp/voice-agent-arm64}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
clip="cards_003.wav"  # "seven of clubs" (tests/data/speech, exact transcript in manifest.tsv)
reply="The quick brown fox jumps over the lazy dog near the river bank."

step_start=0
step() { step_start=$SECONDS; echo "check_arm64: $1" >&2; }
took() { echo "check_arm64:   took $((SECONDS - step_start)) s${1:-}" >&2; }
fail() { echo "check_arm64: FAILED: $1" >&2; exit 1; }

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
missing=()
for p in debootstrap qemu-user-static; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "check_arm64: installing on the host: ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >&2
fi

# The kernel runs arm64 programs through qemu once this is registered (F: the emulator is
# opened now, so it need not exist inside the chroot).
binfmt=/proc/sys/fs/binfmt_misc
[ -e $binfmt/register ] || $sudo mount -t binfmt_misc binfmt_misc $binfmt ||
  fail "binfmt_misc is not available here (a container without it cannot run arm64 programs)"
[ -e $binfmt/qemu-aarch64 ] || $sudo tee $binfmt/register </usr/lib/binfmt.d/qemu-aarch64.conf >/dev/null

mounted=()
cleanup() {
  [ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null || true
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do $sudo umount -l "${mounted[i]}" || true; done
  [ -n "${port_file:-}" ] && rm -f "$port_file"
}
trap cleanup EXIT
mount_inside() {
  mountpoint -q "$root$1" && return
  $sudo mount --bind "$1" "$root$1"
  mounted+=("$root$1")
}

# Runs a command as root inside the arm64 system, with the host's network (loopback included),
# its proxy settings and the certificates it trusts (a network that inspects HTTPS signs with
# its own authority; pip inside must trust it as the host does).
inside() {
  $sudo env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PIP_CERT=/etc/ssl/certs/host-ca-certificates.crt PIP_DEFAULT_TIMEOUT=180 \
    ${http_proxy:+http_proxy=$http_proxy} ${https_proxy:+https_proxy=$https_proxy} \
    ${no_proxy:+no_proxy=$no_proxy} \
    chroot "$root" /bin/sh -c 'cd /opt/voice-agent && exec "$@"' inside "$@"
}

# never delete through a mount left by an interrupted run (/dev, /proc of the host)
remove_root() {
  { grep -o " $root/[^ ]*" /proc/mounts || true; } | sort -r | while read -r m; do $sudo umount -l "$m"; done
  $sudo rm -rf --one-file-system "$root"
}
[ $fresh = 1 ] && remove_root
if [ ! -f "$root/.arm64-root-ready" ]; then
  remove_root
  step "building a Debian bookworm arm64 root in $root (debootstrap, under emulation)"
  # minbase, plus the archive keys apt checks Debian's signatures with (as on Raspberry Pi OS)
  $sudo debootstrap --arch=arm64 --variant=minbase --include=debian-archive-keyring \
    bookworm "$root" "$mirror" >/dev/null
  took " (partly emulated)"
  touch "$root/.arm64-root-ready"
fi
# Not /sys: it describes the host's x86 processors, and ONNX Runtime's cpuinfo, reading it
# under emulation, crashes the import (measured: segfault with it, a warning without it)
for m in /proc /dev /dev/pts; do mount_inside $m; done
cp /etc/resolv.conf "$root/etc/resolv.conf"
mkdir -p "$root/etc/ssl/certs"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/host-ca-certificates.crt"

step "copying the project (git HEAD: commit first) into the arm64 system"
$sudo rm -rf --one-file-system "$root/opt/voice-agent"
mkdir -p "$root/opt/voice-agent"
git archive HEAD | tar -x -C "$root/opt/voice-agent"
took
[ "$(inside uname -m)" = aarch64 ] || fail "the emulated system is not aarch64"

step "the README's set-up, inside: scripts/setup.sh --no-local"
inside scripts/setup.sh --no-local
took " (emulated)"
python_version="$(inside .venv/bin/python -c 'import platform, sys; print(sys.version.split()[0], platform.machine())')"
echo "check_arm64:   Python $python_version" >&2

step "one spoken turn: $clip in, the reply spoken to a WAV, a scripted LLM on loopback"
port_file="$(mktemp)"
PYTHONPATH=tests python3 - "$port_file" "$reply" <<'PY' &
import sys, time
from llm_server import ScriptedLLM, Stream
with ScriptedLLM(Stream(sys.argv[2])) as server:
    with open(sys.argv[1], "w") as fh:
        fh.write(str(server.server.server_address[1]))
    time.sleep(3600)
PY
server_pid=$!
for _ in $(seq 50); do [ -s "$port_file" ] && break; sleep 0.1; done
port="$(cat "$port_file")"
rm -rf "$root/tmp/arm64-turn"
inside .venv/bin/voice-agent chat --input "tests/data/speech/$clip" \
  --output-dir /tmp/arm64-turn/out --transcripts-dir /tmp/arm64-turn/t \
  --llm-url "http://127.0.0.1:$port/v1"
took " (emulated)"

step "checking what was heard and what was said back (Whisper on arm64 hears the reply WAV)"
inside .venv/bin/python - "$reply" <<'PY'
import pathlib, sys
from voice_agent.audio import read_file
from voice_agent.config import SttConfig
from voice_agent.stt import WhisperStt
from voice_agent.transcript import read

def words(text: str) -> list[str]:
    text = text.lower().replace("7", "seven")
    return "".join(c for c in text if c.isalnum() or c == " ").split()

def wer(ref: list[str], hyp: list[str]) -> float:  # the test tools (jiwer) are not installed
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / len(ref)

[md] = pathlib.Path("/tmp/arm64-turn/t").rglob("*.md")
turns = read(md).turns
assert [t.role for t in turns] == ["USER", "ASSISTANT"], turns
heard = wer(words("seven of clubs"), words(turns[0].text))
print(f"check_arm64:   heard {turns[0].text!r} (WER {heard:.0%})", file=sys.stderr)
wav = read_file(pathlib.Path("/tmp/arm64-turn/out/reply-001.wav"))
said = WhisperStt(SttConfig()).transcribe(wav).text
back = wer(words(sys.argv[1]), words(said))
print(f"check_arm64:   reply WAV {wav.seconds:.1f} s, heard back as {said!r} (WER {back:.0%})",
      file=sys.stderr)
sys.exit(0 if heard == 0 and back <= 0.15 else 1)
PY
took " (emulated)"
echo "check_arm64: OK: set-up and a spoken turn work on arm64 (Debian bookworm, emulated)" >&2
