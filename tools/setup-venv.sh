#!/usr/bin/env bash
# Set up .venv for gan-audit from nothing, fast: `tools/setup-venv.sh VENV EXTRAS LOG`.
# Called by the Makefile (`make demo` asks for no extras, `make test` for "test").
#
# 1. CPU torch goes in first, pinned: an unpinned torch (or a range, asked for by
#    another package) would pull a multi-GB CUDA build. A local wheel is used where
#    the machine has one (pip's find-links: PIP_FIND_LINKS or pip's config).
# 2. uv installs the packages when it can be had (on PATH, or from the registry into
#    the venv, 2-4 s): it resolves, downloads, unpacks and byte-compiles in parallel,
#    about 3x faster than pip here. Byte-compiling matters: where PYTHONDONTWRITEBYTECODE
#    is set (as on this project's machines) nothing else writes .pyc files, and every
#    process would read torch from source again (3 s instead of 1 s). pip is the fallback
#    for every step, so a machine without uv (or where uv fails) still gets set up.
set -euo pipefail
VENV=${1:?venv folder}; EXTRAS=${2:-}; LOG=${3:-/dev/null}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
PYTHON=${PYTHON:-python3}
BIN="$VENV/bin"
SPEC="."; [ -n "$EXTRAS" ] && SPEC=".[$EXTRAS]"

test -x "$BIN/python" || "$PYTHON" -m venv "$VENV"

uv=""
if command -v uv >/dev/null 2>&1; then uv=$(command -v uv)
elif [ -x "$BIN/uv" ] || "$BIN/python" -m pip install -q uv >>"$LOG" 2>&1; then uv="$BIN/uv"
fi
find_links=${PIP_FIND_LINKS:-$("$BIN/python" -m pip config get global.find-links 2>/dev/null || true)}

uv_install() {  # uv pip install ARGS... into the venv; find-links as pip has them
  [ -n "$uv" ] || return 1
  UV_FIND_LINKS="$find_links" "$uv" pip install -q --compile-bytecode --python "$BIN/python" "$@" \
    >>"$LOG" 2>&1
}
pip_install() { "$BIN/python" -m pip install -q "$@" >>"$LOG" 2>&1; }

if ! "$BIN/python" -c "import torch" 2>/dev/null; then
  uv_install "torch==$TORCH_VERSION" \
    || pip_install "torch==$TORCH_VERSION" \
    || pip_install "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu \
    || { tail -20 "$LOG" >&2; exit 1; }
fi
# torch is in: the project's range (which 2.13 satisfies) installs no other torch.
uv_install -e "$SPEC" || pip_install -e "$SPEC" || { tail -20 "$LOG" >&2; exit 1; }
"$BIN/python" -c "import audit" || { echo "set-up finished but audit does not import (log: $LOG)" >&2; exit 1; }
