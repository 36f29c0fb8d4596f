#!/usr/bin/env bash
# Installs Debian's aarch64 cross compiler, which links model.tvm.so for ARM targets (rpi4, rpi5,
# arm64-linux, Jetson). Needs root or sudo; does nothing when the compiler is already there.
set -euo pipefail
if command -v aarch64-linux-gnu-g++ >/dev/null 2>&1; then
    echo "aarch64-linux-gnu-g++ is installed"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq g++-aarch64-linux-gnu >/dev/null
aarch64-linux-gnu-g++ --version | head -1
