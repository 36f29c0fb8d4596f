#!/usr/bin/env bash
# Installs Debian's chromium and chromium-driver, which the HTML report's browser test drives headless through
# Selenium (tests/reporting/test_html.py). Needs apt-get and root or sudo; does nothing when both are already
# there. Fails (exit 1, saying why) where it cannot install: CI goes on, and the test that needs the browser is
# skipped, saying why (tests/conftest.py, marker needs_browser).
set -euo pipefail
if command -v chromedriver >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1; then
    echo "chromium and chromedriver are installed"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup_browser.sh: no apt-get here: install chromium and a matching chromedriver another way" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "setup_browser.sh: not root and no sudo: as root, run apt-get install -y chromium chromium-driver" >&2
        exit 1
    fi
    SUDO="sudo"
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
chromedriver --version | head -1
