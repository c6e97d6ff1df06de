#!/usr/bin/env bash
# Install Debian's headless-capable Chromium for the `browser` tests (tests/test_browser.py).
# Idempotent: does nothing when /usr/bin/chromium already exists. Needs root (apt-get).
set -euo pipefail
if [[ -x /usr/bin/chromium ]]; then
    echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo unknown)"
    exit 0
fi
if [[ "$(id -u)" != "0" ]]; then
    echo "tests/install_chromium.sh: must run as root to apt-get install chromium" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends chromium
/usr/bin/chromium --version
