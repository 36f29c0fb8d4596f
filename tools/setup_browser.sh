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
bash "$(dirname "$0")/apt_install.sh" "setup_browser.sh" chromium chromium-driver
chromedriver --version | head -1
