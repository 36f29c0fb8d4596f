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
bash "$(dirname "$0")/apt_install.sh" "setup_cross.sh" g++-aarch64-linux-gnu
aarch64-linux-gnu-g++ --version | head -1
