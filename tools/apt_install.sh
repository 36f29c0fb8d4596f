#!/usr/bin/env bash
# apt_install.sh NAME PACKAGE... : install Debian packages with apt-get (root, or sudo), for the set-up
# scripts beside it. Fails (exit 1, saying why and what to run) where it cannot: no apt-get, or not root
# and no sudo. NAME labels the messages.
set -euo pipefail
name=$1
shift
if ! command -v apt-get >/dev/null 2>&1; then
    echo "$name: no apt-get here: install $* another way" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "$name: not root and no sudo: as root, run apt-get install -y $*" >&2
        exit 1
    fi
    SUDO="sudo"
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
