#!/usr/bin/env bash
# Installs the Debian packages the test suite needs: prometheus (promtool, the real Prometheus server),
# softhsm2 (a PKCS#11 token for signing tests), chromium (the operator console's browser tests, driven by
# Playwright, which must never download a browser of its own), postgresql (initdb/pg_ctl: the tests start
# a throwaway server for the PostgreSQL store) and haproxy (checks deploy/haproxy/haproxy.cfg). Does
# nothing when they are already there.
set -euo pipefail
need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v softhsm2-util >/dev/null 2>&1 || need+=(softhsm2)
[ -x /usr/bin/chromium ] || need+=(chromium)
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
echo "installing Debian packages: ${need[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian's postgresql starts a "main" cluster on port 5432 where services run; the tests run their own.
if [[ " ${need[*]} " == *" postgresql "* ]] && command -v pg_lsclusters >/dev/null 2>&1; then
    pg_lsclusters -h | while read -r version name _; do
        $SUDO pg_ctlcluster "$version" "$name" stop >/dev/null 2>&1 || true
    done
fi
