#!/usr/bin/env bash
# Installs ptxas (PyPI package nvidia-cuda-nvcc) and nvdisasm (nvidia-cuda-nvdisasm, for the
# SASS checks) into a private virtual environment and prints the ptxas path on stdout.
# Idempotent: a second run finds the installed binaries and only prints the path. Location:
# $VIDRT_TOOLS_DIR (default ~/.cache/vidrt/tools).
# Usage: export VIDRT_PTXAS="$(bash scripts/install-ptxas.sh)"
set -euo pipefail
dir="${VIDRT_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vidrt/tools}"
venv="$dir/cuda-nvcc-venv"
find_ptxas() {
    find "$venv" -type f -name ptxas -perm -u+x 2>/dev/null | head -n 1
}
found="$(find_ptxas || true)"
if [ -z "$found" ]; then
    mkdir -p "$dir"
    python3 -m venv "$venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check nvidia-cuda-nvcc >&2
    found="$(find_ptxas || true)"
fi
if [ -z "$found" ]; then
    echo "install-ptxas: nvidia-cuda-nvcc installed but no ptxas binary found under $venv" >&2
    exit 1
fi
find_nvdisasm() {
    find "$venv" -type f -name nvdisasm -perm -u+x 2>/dev/null | head -n 1
}
if [ -z "$(find_nvdisasm)" ]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check nvidia-cuda-nvdisasm >&2
fi
if [ -z "$(find_nvdisasm)" ]; then
    echo "install-ptxas: nvidia-cuda-nvdisasm installed but no nvdisasm binary found under $venv" >&2
    exit 1
fi
echo "$found"
