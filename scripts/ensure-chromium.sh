#!/usr/bin/env bash
# Install Debian's chromium + chromium-driver (for the web page's end-to-end test) if missing.
# Idempotent and quiet when both are present. Needs root (or sudo) and the Debian mirror.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "ensure-chromium: chromium/chromedriver missing and not root; install the Debian packages chromium and chromium-driver" >&2
    exit 1
  fi
fi
echo "ensure-chromium: installing chromium and chromium-driver with apt-get" >&2
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver
chromium --version >&2
chromedriver --version >&2
