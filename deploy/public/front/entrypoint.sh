#!/bin/sh
# front-entrypoint: render nginx.conf from the environment, test it, run nginx.
#   FRONT_UPSTREAM      the SC's service port (required), e.g. 10.230.80.10:3000
#   FRONT_CERT/KEY      TLS certificate and key for clients (/etc/front/tls/front-{cert,key}.pem)
#   FRONT_IDLE_TIMEOUT  close a connection silent this long (10m)
#   FRONT_CONF          the template (/etc/nginx/nginx.conf); another file may be mounted
set -eu
: "${FRONT_UPSTREAM:=}"
: "${FRONT_CERT:=/etc/front/tls/front-cert.pem}"
: "${FRONT_KEY:=/etc/front/tls/front-key.pem}"
: "${FRONT_IDLE_TIMEOUT:=10m}"
: "${FRONT_CONF:=/etc/nginx/nginx.conf}"
export FRONT_UPSTREAM FRONT_CERT FRONT_KEY FRONT_IDLE_TIMEOUT
mkdir -p /tmp/nginx
conf=/tmp/nginx/nginx.conf
# replace only our ${FRONT_...} names: nginx's own $variables stay as they are
sed -e "s|\${FRONT_UPSTREAM}|$FRONT_UPSTREAM|g" -e "s|\${FRONT_CERT}|$FRONT_CERT|g" \
    -e "s|\${FRONT_KEY}|$FRONT_KEY|g" -e "s|\${FRONT_IDLE_TIMEOUT}|$FRONT_IDLE_TIMEOUT|g" \
    "$FRONT_CONF" >"$conf"
if grep -q '\${FRONT_' "$conf" || { grep -q 'proxy_pass' "$conf" && [ -z "$FRONT_UPSTREAM" ]; }; then
    echo "front-entrypoint: FRONT_UPSTREAM (the SC's service address:port) is not set" >&2
    exit 78
fi
nginx -t -q -c "$conf" -e stderr -g 'daemon off;' || exit 78
exec nginx -c "$conf" -e stderr -g 'daemon off;'
