#!/usr/bin/env bash
# Installs Debian's aarch64 cross compiler, which links model.tvm.so for ARM targets (rpi4, rpi5,
# arm64-linux, Jetson). Needs apt-get and root or sudo; does nothing when the compiler is already there.
# Fails (exit 1, saying why) where it cannot install: CI goes on, and the tests that need the compiler
# are skipped, saying why (tests/conftest.py, marker needs_cross).
set -euo pipefail
if command -v aarch64-linux-gnu-g++ >/dev/null 2>&1; then
    echo "aarch64-linux-gnu-g++ is installed"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup_cross.sh: no apt-get here: install an aarch64-linux-gnu-g++ cross compiler another way" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "setup_cross.sh: not root and no sudo: as root, run apt-get install -y g++-aarch64-linux-gnu" >&2
        exit 1
    fi
    SUDO="sudo"
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq g++-aarch64-linux-gnu >/dev/null
aarch64-linux-gnu-g++ --version | head -1
