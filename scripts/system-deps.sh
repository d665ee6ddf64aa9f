#!/usr/bin/env bash
# Debian packages the test suite needs: chromium (Playwright drives it), node/npm (interop
# with openid-client), softhsm2 (the KMS pkcs11 root keeper is tested against a real
# token), modsecurity-crs (the WAF's CRS mode is tested on Debian's CRS 3.3), certbot (the
# ACME server is tested with Debian's certbot and lego). Installs
# what is missing when run as root; otherwise says what to do.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs npm)
command -v softhsm2-util >/dev/null 2>&1 || missing+=(softhsm2)
[ -d /usr/share/modsecurity-crs/rules ] || missing+=(modsecurity-crs)
command -v certbot >/dev/null 2>&1 || missing+=(certbot)
command -v lego >/dev/null 2>&1 || missing+=(lego)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${missing[*]} (run: sudo apt-get install -y ${missing[*]})" >&2
  exit 1
fi
echo "installing ${missing[*]} ..." >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
