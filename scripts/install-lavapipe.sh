#!/usr/bin/env bash
# Installs Mesa's lavapipe (a CPU Vulkan driver) and the Vulkan loader from Debian's packages,
# so that the wgpu backend's tests run for real on a machine with no GPU. Idempotent: does
# nothing when the lavapipe ICD and libvulkan are already there. Needs root (or sudo) for
# apt-get; without either it says so and exits non-zero.
set -euo pipefail
shopt -s globstar
have() {
    # Not `ldconfig -p`: /sbin is not on a non-root user's PATH.
    ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 && compgen -G '/usr/lib*/**/libvulkan.so.1' >/dev/null
}
if have; then
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    sudo=""
elif command -v sudo >/dev/null 2>&1; then
    sudo="sudo"
else
    echo "install-lavapipe: need root or sudo to apt-get install mesa-vulkan-drivers libvulkan1" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >&2
$sudo apt-get install -y -qq --no-install-recommends mesa-vulkan-drivers libvulkan1 >&2
if ! have; then
    echo "install-lavapipe: installed, but no lavapipe ICD or libvulkan.so.1 was found" >&2
    exit 1
fi
