#!/usr/bin/env bash
# Render an Apache + ModSecurity 2 + OWASP CRS configuration for bench/waf.py.
#
#   bench/peers/modsecurity/setup.sh DIR PORT PARANOIA on|off
#
# Installs the Debian packages apache2, libapache2-mod-security2 and modsecurity-crs when one
# is missing (needs root), then writes DIR/httpd.conf (and DIR/modsecurity.conf when "on").
# Start the server in the foreground with:  /usr/sbin/apache2 -f DIR/httpd.conf -DFOREGROUND
# It touches no file under /etc/apache2: ServerRoot, pid, locks and logs are all in DIR.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${1:?usage: setup.sh DIR PORT PARANOIA on|off}"
port="${2:?port}"
paranoia="${3:?paranoia 1-4}"
engine="${4:?on|off}"

missing=()
for pkg in apache2 libapache2-mod-security2 modsecurity-crs; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup.sh: missing Debian packages: ${missing[*]} (run as root to install)" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

mkdir -p "$dir"/{logs,run,tmp,data}
chmod 0777 "$dir/tmp" "$dir/data"
chmod 0755 "$dir"
cp "$here/ok.lua" "$dir/ok.lua"
if [ "$engine" = "on" ]; then
    sed -e "s|@ROOT@|$dir|g" -e "s|@PARANOIA@|$paranoia|g" \
        "$here/modsecurity.conf.template" > "$dir/modsecurity.conf"
    load="LoadModule security2_module /usr/lib/apache2/modules/mod_security2.so"
    conf="Include \"$dir/modsecurity.conf\""
else
    load="# ModSecurity not loaded (baseline)"
    conf=""
fi
sed -e "s|@ROOT@|$dir|g" -e "s|@PORT@|$port|g" -e "s|@MODSEC_LOAD@|$load|" \
    -e "s|@MODSEC_CONF@|$conf|" "$here/httpd.conf.template" > "$dir/httpd.conf"
/usr/sbin/apache2 -t -f "$dir/httpd.conf" 2>&1 | grep -v "Syntax OK" >&2 || true
echo "$dir/httpd.conf"
