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
# Debian's python3 ships without venv/ensurepip (package python3-venv); a bare image may
# have no python3 at all. Both come from apt, as root or through sudo.
ensure_python_venv() {
    if command -v python3 >/dev/null 2>&1 && python3 -c 'import ensurepip, venv' 2>/dev/null; then
        return 0
    fi
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null 2>&1 || { echo "install-ptxas: need python3 with venv (apt-get install python3-venv), and root or sudo to install it" >&2; return 1; }
        sudo="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq >&2
    $sudo apt-get install -y -qq --no-install-recommends python3 python3-venv >&2
}
if [ -z "$found" ]; then
    mkdir -p "$dir"
    ensure_python_venv
    rm -rf "$venv"
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
