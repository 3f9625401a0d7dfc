#!/usr/bin/env bash
# Set up .venv for gan-audit from nothing, fast: `tools/setup-venv.sh VENV EXTRAS LOG`.
# Called by the Makefile (`make demo` asks for no extras, `make test` for "test").
#
# 1. CPU torch, pinned: PyPI's torch for Linux (pinned or not) is a multi-GB CUDA build.
#    A local wheel for this Python is used where the machine has one (pip's find-links:
#    PIP_FIND_LINKS or pip's config), PyTorch's CPU index otherwise.
# 2. uv installs torch, the project and pip in one step when uv can be had (on PATH, or
#    fetched by the system's pip into VENV/.uv, about 2 s): it resolves, downloads and
#    unpacks in parallel, in about 2 s with a warm cache. The venv is made without pip
#    (ensurepip alone takes 3-4 s); pip comes in with the project, so the venv has it as
#    usual. pip is the fallback for every step, so a machine without uv (or where uv fails)
#    still gets set up (GAN_AUDIT_NO_UV=1 asks for pip only).
# 3. No byte-compiling at install: compiling every module of torch and the rest takes about
#    25 s on 2 cores. Python writes the .pyc of what a process imports on first use, so the
#    Makefile runs its commands without PYTHONDONTWRITEBYTECODE (set on this project's
#    machines): the demo's first run compiles what it imports (a few seconds), and every
#    later process reads the .pyc.
set -euo pipefail
VENV=${1:?venv folder}; EXTRAS=${2:-}; LOG=${3:-/dev/null}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
PYTHON=${PYTHON:-python3}
BIN="$VENV/bin"
SPEC="."; [ -n "$EXTRAS" ] && SPEC=".[$EXTRAS]"

test -x "$BIN/python" || "$PYTHON" -m venv --without-pip "$VENV"

uv=""  # GAN_AUDIT_NO_UV=1: pip only
if [ -n "${GAN_AUDIT_NO_UV:-}" ]; then :
elif command -v uv >/dev/null 2>&1; then uv=$(command -v uv)
elif [ -x "$VENV/.uv/bin/uv" ] \
    || "$PYTHON" -m pip install -q --disable-pip-version-check --target "$VENV/.uv" uv >>"$LOG" 2>&1; then
  uv="$VENV/.uv/bin/uv"
fi
find_links=${PIP_FIND_LINKS:-$("$PYTHON" -m pip config get global.find-links 2>/dev/null || true)}

# torch from a local CPU wheel for this Python where pip's find-links has one, else from
# PyTorch's CPU index: PyPI's torch for Linux is the multi-GB CUDA build, pinned or not.
CPU_INDEX=https://download.pytorch.org/whl/cpu
tag=$("$BIN/python" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
local_torch=""
for d in $find_links; do
  compgen -G "${d#file://}/torch-$TORCH_VERSION*-$tag-*.whl" >/dev/null && local_torch=1 && break
done
uv_torch=(--torch-backend cpu); [ -n "$local_torch" ] && uv_torch=()

uv_install() {  # uv pip install ARGS... into the venv; find-links as pip has them
  [ -n "$uv" ] || return 1
  UV_FIND_LINKS=$(echo $find_links | tr ' ' ',') \
    "$uv" pip install -q --python "$BIN/python" "$@" >>"$LOG" 2>&1
}
pip_install() {  # the fallback: pip in the venv (ensurepip first if the venv has none)
  "$BIN/python" -m pip --version >/dev/null 2>&1 || "$BIN/python" -m ensurepip >>"$LOG" 2>&1
  "$BIN/python" -m pip install -q "$@" >>"$LOG" 2>&1
}

# ${a[@]+"${a[@]}"}: an empty array under set -u on bash < 4.4 (macOS's) too.
if ! uv_install ${uv_torch[@]+"${uv_torch[@]}"} "torch==$TORCH_VERSION" -e "$SPEC" pip; then
  if ! "$BIN/python" -c "import torch" 2>/dev/null; then
    { [ -n "$local_torch" ] && pip_install "torch==$TORCH_VERSION"; } \
      || pip_install "torch==$TORCH_VERSION" --index-url "$CPU_INDEX" \
      || { tail -20 "$LOG" >&2; exit 1; }
  fi
  # torch is in: the project's range (which 2.13 satisfies) installs no other torch.
  pip_install -e "$SPEC" || { tail -20 "$LOG" >&2; exit 1; }
fi
"$BIN/python" -c "import audit" || { echo "set-up finished but audit does not import (log: $LOG)" >&2; exit 1; }
