#!/usr/bin/env bash
# Installs Debian's aarch64 cross compiler, which links model.tvm.so for ARM targets (rpi4, rpi5,
# arm64-linux, Jetson), and qemu-user, which runs the emulated aarch64 device that checks those
# libraries' numerics (edgeprune device emulate; tests/remote/test_emulated.py). Needs apt-get and root
# or sudo; does nothing for what is already there.
# Fails (exit 1, saying why) where it cannot install: CI goes on, and the tests that need the compiler
# or qemu are skipped, saying why (tests/conftest.py, markers needs_cross and needs_qemu).
set -euo pipefail
missing=()
command -v aarch64-linux-gnu-g++ >/dev/null 2>&1 || missing+=(g++-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null 2>&1 || missing+=(qemu-user)
if [ "${#missing[@]}" -eq 0 ]; then
    echo "aarch64-linux-gnu-g++ and qemu-aarch64 are installed"
    exit 0
fi
bash "$(dirname "$0")/apt_install.sh" "setup_cross.sh" "${missing[@]}"
aarch64-linux-gnu-g++ --version | head -1
qemu-aarch64 --version | head -1
