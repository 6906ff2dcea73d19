#!/usr/bin/env bash
# Installs the Debian packages the test suite needs: prometheus (promtool, the real Prometheus server),
# softhsm2 (a PKCS#11 token for signing tests) and chromium (the operator console's browser tests, driven by
# Playwright, which must never download a browser of its own). Does nothing when they are already there.
set -euo pipefail
need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v softhsm2-util >/dev/null 2>&1 || need+=(softhsm2)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
echo "installing Debian packages: ${need[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
