#!/usr/bin/env bash
# Makes sure headless Chromium and its WebDriver are installed (Debian's chromium and
# chromium-driver): the dashboard test drives a real browser. Used by scripts/test.sh.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
if [[ $(id -u) != 0 ]]; then
    echo "chromium and chromium-driver are needed by the dashboard test: install them (Debian) and retry" >&2
    exit 1
fi
echo "installing chromium and chromium-driver" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
