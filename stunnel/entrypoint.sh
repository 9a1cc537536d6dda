#!/bin/sh
# Entrypoint of the edgerq stunnel image.
#
#   stunnel-entrypoint server        TLS server beside the SC
#   stunnel-entrypoint client        TLS client beside the SP, with a namespace watchdog
#   stunnel-entrypoint init-secrets  create missing TLS material and the pipe token
#   stunnel-entrypoint <cmd> ...     run <cmd>
#
# Environment (defaults match docker-compose.yml):
#   STUNNEL_ACCEPT    server: 0.0.0.0:3443        client: 127.0.0.1:2080
#   STUNNEL_CONNECT   server: sc:12345            client: stunnel-sc:3443
#   STUNNEL_CERT/KEY  own certificate and key     server: /secrets/sc/server-{cert,key}.pem
#                                                 client: /secrets/sp/client-{cert,key}.pem
#   STUNNEL_CAFILE    the peer's certificate to verify against (verify = 2, both ways)
#                                                 server: /secrets/sc/client-cert.pem
#                                                 client: /secrets/sp/server-cert.pem
#   STUNNEL_CHECKHOST client: name the server certificate must carry (stunnel-sc): a DNS
#                     name (checkHost), an IP address (checkIP), or empty for no name
#                     check (the pinned CAfile alone decides)
#   STUNNEL_DEBUG     stunnel log level 0-7 (5 = notice)
#   WATCHDOG_INTERVAL client: seconds between namespace checks (2)
#   WATCHDOG_GRACE    client: seconds to wait before exiting once the namespace is gone (3)
#   TLS_SERVER_NAME   init-secrets: the server certificate's name (stunnel-sc)
#   TLS_CLIENT_NAME   init-secrets: the client certificate's name (stunnel-sp)
#   QUIC_SERVER_NAME  init-secrets: when set (docker-compose.udp.yml: sc), also a key and
#                     certificate with this name for the SC's udp (QUIC) listener, in
#                     /secrets/quic-sc, and the certificate alone in /secrets/quic-sp (the
#                     SP's <ca_file>)
set -eu

log() { printf 'stunnel-entrypoint: %s\n' "$*" >&2; }

# shellcheck disable=SC2016  # the '${' and '}' patterns below are literal on purpose
render() {  # render TEMPLATE > /tmp/stunnel.conf, filling ${VAR}s from the environment
    conf=/tmp/stunnel.conf
    : >"$conf"
    while IFS= read -r line || [ -n "$line" ]; do
        while :; do
            case $line in
                ';'*|'#'*) break ;;  # comments are copied as they are
                *'${'*'}'*)
                    var=${line#*'${'}; var=${var%%'}'*}
                    eval "val=\${$var-}"
                    [ -n "$val" ] || { log "missing value for \${$var} in $1"; exit 64; }
                    line=$(printf '%s' "$line" | sed "s|\${$var}|$val|g") ;;
                *) break ;;
            esac
        done
        printf '%s\n' "$line" >>"$conf"
    done <"$1"
    echo "$conf"
}

wait_for_file() {  # the secrets are made by the secrets-init service
    i=0
    while [ ! -s "$1" ]; do
        i=$((i + 1))
        [ "$i" -le 60 ] || { log "$1 missing (did secrets-init run?)"; exit 66; }
        sleep 1
    done
}

has_external_interface() {  # a non-loopback interface in our network namespace?
    awk -F: 'NR > 2 { gsub(/ /, "", $1); if ($1 != "lo") found = 1 } END { exit !found }' /proc/net/dev
}

run_server() {
    export STUNNEL_ACCEPT="${STUNNEL_ACCEPT:-0.0.0.0:3443}"
    export STUNNEL_CONNECT="${STUNNEL_CONNECT:-sc:12345}"
    export STUNNEL_CERT="${STUNNEL_CERT:-/secrets/sc/server-cert.pem}"
    export STUNNEL_KEY="${STUNNEL_KEY:-/secrets/sc/server-key.pem}"
    export STUNNEL_CAFILE="${STUNNEL_CAFILE:-/secrets/sc/client-cert.pem}"
    export STUNNEL_DEBUG="${STUNNEL_DEBUG:-5}"
    wait_for_file "$STUNNEL_CERT"; wait_for_file "$STUNNEL_KEY"; wait_for_file "$STUNNEL_CAFILE"
    conf=$(render /etc/edgerq-stunnel/server.conf)
    log "server: accept $STUNNEL_ACCEPT -> connect $STUNNEL_CONNECT (client certificate required)"
    exec stunnel "$conf"
}

check_line() {  # the stunnel option that checks the server's name in its certificate
    case $1 in
        "") echo "; no name check: the server certificate is pinned by CAfile" ;;
        *:*|*[!0-9.]*) case $1 in *:*) echo "checkIP = $1" ;; *) echo "checkHost = $1" ;; esac ;;
        *) echo "checkIP = $1" ;;
    esac
}

run_client() {
    export STUNNEL_ACCEPT="${STUNNEL_ACCEPT:-127.0.0.1:2080}"
    export STUNNEL_CONNECT="${STUNNEL_CONNECT:-stunnel-sc:3443}"
    export STUNNEL_CERT="${STUNNEL_CERT:-/secrets/sp/client-cert.pem}"
    export STUNNEL_KEY="${STUNNEL_KEY:-/secrets/sp/client-key.pem}"
    export STUNNEL_CAFILE="${STUNNEL_CAFILE:-/secrets/sp/server-cert.pem}"
    export STUNNEL_CHECKHOST="${STUNNEL_CHECKHOST-stunnel-sc}"
    STUNNEL_CHECK_LINE=$(check_line "$STUNNEL_CHECKHOST"); export STUNNEL_CHECK_LINE
    export STUNNEL_DEBUG="${STUNNEL_DEBUG:-5}"
    interval="${WATCHDOG_INTERVAL:-2}"
    grace="${WATCHDOG_GRACE:-3}"
    wait_for_file "$STUNNEL_CERT"; wait_for_file "$STUNNEL_KEY"; wait_for_file "$STUNNEL_CAFILE"
    conf=$(render /etc/edgerq-stunnel/client.conf)
    # A sidecar with network_mode "service:sp" lives in the SP container's
    # network namespace. When the SP restarts, Docker gives it a new one and
    # this namespace keeps only "lo": exit then, and the restart policy starts
    # this container again, inside the SP's new namespace.
    if ! has_external_interface; then
        log "no network interface besides lo: the namespace we joined is gone; exiting for a restart"
        exit 75
    fi
    log "client: accept $STUNNEL_ACCEPT -> connect $STUNNEL_CONNECT (verify 2, ${STUNNEL_CHECK_LINE#; })"
    stunnel "$conf" &
    pid=$!
    trap 'kill -TERM "$pid" 2>/dev/null; wait "$pid"; exit 0' TERM INT
    while :; do
        sleep "$interval" &
        wait $! || true
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid" && rc=0 || rc=$?
            log "stunnel exited ($rc)"
            exit "$rc"
        fi
        if ! has_external_interface; then
            log "watchdog: the network namespace lost its interfaces (the SP stopped or restarted)"
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" || true
            # Give the SP time to be running again: Docker's restart policy
            # starts us at once, and gives up if the SP is not running then.
            sleep "$grace"
            log "exiting, for the restart policy to start us in the SP's new namespace"
            exit 75
        fi
    done
}

new_pair() {  # new_pair DIR NAME ROLE [OPENSSL-ARGS]: a key and a self-signed certificate for NAME
    dir=$1; name=$2; role=$3; shift 3
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -days 825 -subj "/CN=$name" -addext "subjectAltName=DNS:$name" "$@" \
        -keyout "$dir/$role-key.pem" -out "$dir/$role-cert.pem" 2>/dev/null
    chmod 0400 "$dir/$role-key.pem"; chmod 0444 "$dir/$role-cert.pem"
    log "created a key and a self-signed certificate for $name ($role)"
}

publish() {  # publish FILE DEST: copy a certificate when it differs
    if ! cmp -s "$1" "$2" 2>/dev/null; then
        rm -f "$2.tmp"
        cp "$1" "$2.tmp" && chmod 0444 "$2.tmp" && mv -f "$2.tmp" "$2"
        log "published $(basename "$1") to $(dirname "$2")"
    fi
}

init_secrets() {
    # /secrets/sc (volume tls-sc):  server key + certificate, the client's certificate
    # /secrets/sp (volume tls-sp):  client key + certificate, the server's certificate
    # /secrets/token (pipe-token):  the pipe token shared by sc and sp
    umask 077
    sc=/secrets/sc; sp=/secrets/sp; token=/secrets/token
    if [ ! -s "$token/pipe-token" ]; then
        rm -f "$token/pipe-token.tmp"
        openssl rand -hex 32 >"$token/pipe-token.tmp"
        chmod 0400 "$token/pipe-token.tmp" && mv "$token/pipe-token.tmp" "$token/pipe-token"
        log "created the pipe token"
    fi
    if [ ! -s "$sc/server-key.pem" ] || [ ! -s "$sc/server-cert.pem" ]; then
        rm -f "$sc/server-key.pem" "$sc/server-cert.pem"
        new_pair "$sc" "${TLS_SERVER_NAME:-stunnel-sc}" server
    fi
    if [ ! -s "$sp/client-key.pem" ] || [ ! -s "$sp/client-cert.pem" ]; then
        rm -f "$sp/client-key.pem" "$sp/client-cert.pem"
        new_pair "$sp" "${TLS_CLIENT_NAME:-stunnel-sp}" client
    fi
    publish "$sc/server-cert.pem" "$sp/server-cert.pem"
    publish "$sp/client-cert.pem" "$sc/client-cert.pem"
    certs="$sc/server-cert.pem $sp/client-cert.pem"
    if [ -n "${QUIC_SERVER_NAME:-}" ]; then
        # the udp variant: the SC's QUIC certificate (SAN DNS:$QUIC_SERVER_NAME), verified
        # by the SP against its <ca_file>, a copy of it in the SP's volume (no key there)
        qsc=/secrets/quic-sc; qsp=/secrets/quic-sp
        if [ ! -s "$qsc/sc-key.pem" ] || [ ! -s "$qsc/sc-cert.pem" ]; then
            rm -f "$qsc/sc-key.pem" "$qsc/sc-cert.pem"
            # CA:FALSE: the QUIC stack (webpki) refuses a CA certificate as the server's own
            new_pair "$qsc" "$QUIC_SERVER_NAME" sc -addext "basicConstraints=critical,CA:FALSE"
        fi
        publish "$qsc/sc-cert.pem" "$qsp/sc-cert.pem"
        certs="$certs $qsc/sc-cert.pem"
    fi
    for f in $certs; do
        printf '%s: %s\n' "$(basename "$f")" \
            "$(openssl x509 -in "$f" -noout -fingerprint -sha256 | cut -d= -f2)" >&2
    done
    log "secrets ready"
}

cmd="${1:-server}"
case "$cmd" in
    server) run_server ;;
    client) run_client ;;
    init-secrets) init_secrets ;;
    *) exec "$@" ;;
esac
