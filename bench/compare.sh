#!/usr/bin/env bash
# sidekey vs nginx: the same authenticating-proxy job on one machine.
#
#   bench/compare.sh            # full run (about 15-20 minutes on 2 cores)
#   QUICK=1 bench/compare.sh    # smoke run (about 5 minutes)
#
# Everything runs on loopback (127.0.0.1) and every load is bounded in time.
# The script starts a local upstream (nginx: 200 only with the expected Basic
# credential, 401 otherwise; plain and TLS listeners), nginx as the peer
# proxy, and sidekey, proves that each proxy's credential is accepted, then
# runs the same wrk loads against direct / nginx / sidekey, alternating the
# targets rep by rep, and prints Markdown tables (see bench/README.md).
# It only ever stops the processes it started itself.
#
# Knobs (environment):
#   REPS=3            reps per target and load (targets alternate within a rep)
#   DURATION=6        seconds per wrk run
#   WARMUP=1          seconds of unrecorded warm-up per target and load
#   CONNS=64          connections of the throughput load (wrk -t2)
#   IR_N=1000 IR_M=200  requests of the two callgrind runs (instructions/request;
#                     also the connections of the per-connection runs)
#   IDLE_CONNS=10000  idle client connections of the RSS scenario (0 = skip)
#   UPLOAD_MB=50      size of the upload scenario (0 = skip)
#   SCENARIOS="plain tls signed cached onetime onetime_pool sigv4 allow"  scenarios
#                     (sigv4 = aws_sigv4 with payload = "unsigned"; allow = the
#                     Basic route behind 20 [[route.allow]] rules)
#                     (onetime = one-time token minted per request, no pool;
#                     onetime_pool = the same with POOL_SIZE tokens minted ahead)
#   POOL_SIZE=32      pool_size of the onetime_pool route
#   MINT_MS=20        how long the mint server (mint-nginx.conf.in) takes per mint
#   LOADS="c64 c1 c1p close"  loads to run ("" = none: only callgrind and
#                     resources); c1p = one connection paced: PACE_MS between
#                     requests; close = CLOSE_CONNS connections that each send
#                     one request with `Connection: close` (a new connection
#                     per request)
#   CLOSE_CONNS=16    connections of the close load (wrk -t2)
#   PACE_MS=1         pause before each request of the c1p load (wrk delay())
#   CALLGRIND=1       0 skips the instructions/request measurement
#   SYSCALLS=0        1: after the loads, one more `close` load of DURATION
#                     seconds per proxy (plain scenario) with `strace -c -f`
#                     attached to it (nginx: master and workers): system calls
#                     per new connection, by name (strace slows the proxy, so
#                     that load's req/s is not reported)
#   CONN_IR=1         with CALLGRIND=1: instructions per accepted connection
#                     (accept, one request with `Connection: close`, close),
#                     plain and tls scenarios, nginx and sidekey
#   PROXY_WORKERS=<nproc>  nginx peer worker processes, and sidekey's
#                     worker threads (proxy.workers)
#   UPSTREAM_WORKERS=1
#   ACCESS_LOG=0      1 turns on both proxies' access logs (to files) for
#                     everything: nginx's `combined` with buffer=64k flush=1s,
#                     sidekey's default `info` line (LOG_FORMAT)
#   LOG_FORMAT=text   sidekey's --log-format when its access log is on (text, json)
#   LOG_IR=1          with CALLGRIND=1 and ACCESS_LOG=0: instructions/request of
#                     the plain and tls scenarios again with the access logs on
#                     (nginx combined buffered; sidekey text, then json): what the
#                     log line costs each proxy
#   HTTPS_CLIENTS=1   with CALLGRIND=1: instructions per request inside a
#                     CONNECT tunnel, and per new client TLS connection (full
#                     handshake + one request) for sidekey's TLS listener and
#                     nginx terminating TLS
#   HS_N=200 HS_M=50  connections of the two handshake callgrind runs
#   SHARED_CACHE=1    with CALLGRIND=1 and the cached scenario: instructions per
#                     request of the cached route again with [proxy.shared_cache]
#                     on (a redis-server the script starts on a free port)
#   LEAF_HOSTS=3000   distinct host names sent through CONNECT to a wildcard
#                     route (leaf-certificate cache memory; 0 = skip)
#   SIDEKEY_BIN=...   use this binary instead of building one
#   KEEP=1            keep the temp dir (configs, logs, callgrind files)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/bench"

if [[ "${QUICK:-0}" == 1 ]]; then
    : "${REPS:=1}" "${DURATION:=3}" "${WARMUP:=1}" "${IR_N:=300}" "${IR_M:=100}"
    : "${IDLE_CONNS:=2000}" "${UPLOAD_MB:=50}"
fi
REPS=${REPS:-3}
DURATION=${DURATION:-6}
WARMUP=${WARMUP:-1}
CONNS=${CONNS:-64}
IR_N=${IR_N:-1000}
IR_M=${IR_M:-200}
IDLE_CONNS=${IDLE_CONNS:-10000}
UPLOAD_MB=${UPLOAD_MB:-50}
SCENARIOS=${SCENARIOS:-"plain tls signed cached onetime onetime_pool sigv4 allow"}
POOL_SIZE=${POOL_SIZE:-32}
MINT_MS=${MINT_MS:-20}
LOADS=${LOADS-"c$CONNS c1 c1p close"}
CLOSE_CONNS=${CLOSE_CONNS:-16}
CONN_IR=${CONN_IR:-1}
PACE_MS=${PACE_MS:-1}
CALLGRIND=${CALLGRIND:-1}
SYSCALLS=${SYSCALLS:-0}
HTTPS_CLIENTS=${HTTPS_CLIENTS:-1}
HS_N=${HS_N:-200}
HS_M=${HS_M:-50}
LEAF_HOSTS=${LEAF_HOSTS:-3000}
SHARED_CACHE=${SHARED_CACHE:-1}
PROXY_WORKERS=${PROXY_WORKERS:-$(nproc)}
UPSTREAM_WORKERS=${UPSTREAM_WORKERS:-1}
ACCESS_LOG=${ACCESS_LOG:-0}
LOG_FORMAT=${LOG_FORMAT:-text}
LOG_IR=${LOG_IR:-1}

log() { printf '[compare %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- dependencies ----------------------------------------------------------

# The nginx module that lets the mint server wait before answering.
ECHO_MODULE=${ECHO_MODULE:-/usr/lib/nginx/modules/ngx_http_echo_module.so}

install_missing() {
    local -a pkgs=()
    command -v nginx >/dev/null || pkgs+=(nginx)
    command -v wrk >/dev/null || pkgs+=(wrk)
    { command -v valgrind >/dev/null && command -v callgrind_annotate >/dev/null; } || pkgs+=(valgrind)
    command -v openssl >/dev/null || pkgs+=(openssl)
    command -v curl >/dev/null || pkgs+=(curl)
    command -v python3 >/dev/null || pkgs+=(python3)
    [[ -e $ECHO_MODULE ]] || pkgs+=(libnginx-mod-http-echo)
    command -v pgrep >/dev/null || pkgs+=(procps)
    [[ ${SYSCALLS:-0} != 1 ]] || command -v strace >/dev/null || pkgs+=(strace)
    [[ ${#pkgs[@]} -eq 0 ]] && return
    log "installing ${pkgs[*]} (apt-get)"
    local sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    command -v apt-get >/dev/null || die "missing ${pkgs[*]} and no apt-get: install them by hand"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
}
install_missing
# nginx lives in /usr/sbin, which a non-root PATH may lack.
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# --- processes: every one we start is tracked and stopped on exit ------------

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sidekey-bench.XXXXXX")
mkdir -p "$WORK/tmp"
declare -a PIDS=()

stop_pid() {
    local pid=$1 sig=${2:-TERM} i
    kill -0 "$pid" 2>/dev/null || return 0
    kill "-$sig" "$pid" 2>/dev/null || true
    # Up to 30 s: a process under valgrind is slow to exit, and killing it
    # loses its callgrind output.
    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    if [[ "${KEEP:-0}" == 1 ]]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Forgets a stopped PID.
untrack() {
    local pid=$1 p
    local -a keep=()
    for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

port_listening() {
    local hex
    hex=$(printf ':%04X' "$1")
    awk -v p="$hex" '$4 == "0A" && substr($2, length($2) - 4) == p { f = 1 } END { exit !f }' \
        /proc/net/tcp
}

# Waits (without connecting) until PORT listens, or PID dies.
wait_listen() {
    local port=$1 pid=$2 secs=${3:-60} i
    for ((i = 0; i < secs * 10; i++)); do
        port_listening "$port" && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 10000))
        port_listening "$p" || { echo "$p"; return; }
    done
}

# The PIDs of a process and its children (nginx master + workers).
tree_pids() {
    echo "$1"
    pgrep -P "$1" 2>/dev/null || true
}

# Sum of a /proc status field (VmRSS, VmHWM) over a process tree, in KiB.
mem_kib() {
    local field=$1 root=$2 pid total=0 v
    for pid in $(tree_pids "$root"); do
        v=$(awk -v f="$field:" '$1 == f { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

# user+system CPU time of a process tree, in clock ticks.
cpu_ticks() {
    local pid total=0 v
    for pid in $(tree_pids "$1"); do
        v=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{ print $12 + $13 }' || true)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)

mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# --- build and material ----------------------------------------------------

if [[ -n "${SIDEKEY_BIN:-}" ]]; then
    SIDEKEY=$SIDEKEY_BIN
else
    log "building sidekey (cargo build --release --locked)"
    (cd "$ROOT" && cargo build --release --locked --quiet)
    SIDEKEY="${CARGO_TARGET_DIR:-$ROOT/target}/release/sidekey"
fi
[[ -x "$SIDEKEY" ]] || die "no sidekey binary at $SIDEKEY"

log "generating a throwaway CA and server certificate in $WORK"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=sidekey bench CA" -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=tls.bench.test" -keyout "$WORK/server.key" -out "$WORK/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:tls.bench.test\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' \
    >"$WORK/server.ext"
openssl x509 -req -in "$WORK/server.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" \
    -CAcreateserial -days 2 -extfile "$WORK/server.ext" -out "$WORK/server.pem" 2>/dev/null

# sidekey's own interception CA (HTTPS clients).
mkdir -p "$WORK/sidekey-ca"
"$SIDEKEY" ca init --dir "$WORK/sidekey-ca" >/dev/null || die "sidekey ca init failed"
SIDEKEY_CA="$WORK/sidekey-ca/sidekey-ca.pem"

USERNAME="bench-$(openssl rand -hex 4)"
PASSWORD=$(openssl rand -hex 16)
BASIC="Basic $(printf '%s:%s' "$USERNAME" "$PASSWORD" | base64 -w0)"
SIGN_KEY="key-$(openssl rand -hex 8)"
SIGN_SECRET=$(openssl rand -hex 16)
BEARER_TOKEN="tok-$(openssl rand -hex 16)"
AWS_KEY_ID="AKIABENCH$(openssl rand -hex 4 | tr a-f A-F)"
AWS_SECRET=$(openssl rand -base64 30)

# Distinct free ports: free_port only looks at listeners, so two picks in a
# row could coincide.
declare -a TAKEN=()
distinct_port() {
    local p
    while :; do
        p=$(free_port)
        [[ " ${TAKEN[*]} " == *" $p "* ]] || break
    done
    echo "$p"
}
UP_PLAIN=$(distinct_port); TAKEN+=("$UP_PLAIN")
UP_TLS=$(distinct_port); TAKEN+=("$UP_TLS")
PEER=$(distinct_port); TAKEN+=("$PEER")
SIDEKEY_PORT=$(distinct_port); TAKEN+=("$SIDEKEY_PORT")
TOKEN_PORT=$(distinct_port); TAKEN+=("$TOKEN_PORT") # the cached route's token endpoint (upstream nginx)
MINT_PORT=$(distinct_port); TAKEN+=("$MINT_PORT")   # the one-time routes' token endpoint
SIDEKEY_TLS=$(distinct_port); TAKEN+=("$SIDEKEY_TLS") # sidekey's TLS listener ([proxy.intercept])
PEER_TLS=$(distinct_port); TAKEN+=("$PEER_TLS")       # nginx terminating TLS from clients

USER_LINE=""
[[ $(id -u) -eq 0 ]] && USER_LINE="user root;"
# nginx's access log as a production nginx keeps it: the default `combined`
# format, buffered (written when 64 KiB accumulate, or after 1 s).
ACCESS_OFF="access_log off;"
ACCESS_ON="access_log $WORK/peer-access.log combined buffer=64k flush=1s;"
ACCESS_LINE=$ACCESS_OFF
# sidekey: `warn` leaves out the access lines (info), the default `info`
# writes them; its log (stderr) goes to a file, like nginx's.
SIDEKEY_LOG=warn
SIDEKEY_FORMAT=$LOG_FORMAT
if [[ "$ACCESS_LOG" == 1 ]]; then
    ACCESS_LINE=$ACCESS_ON
    SIDEKEY_LOG=info
fi

fill() {
    sed -e "s|@WORK@|$WORK|g" -e "s|@UP_PLAIN@|$UP_PLAIN|g" -e "s|@UP_TLS@|$UP_TLS|g" \
        -e "s|@PEER@|$PEER|g" -e "s|@SIDEKEY@|$SIDEKEY_PORT|g" -e "s|@BASIC@|$BASIC|g" \
        -e "s|@PEER_TLS@|$PEER_TLS|g" -e "s|@SIDEKEY_TLS@|$SIDEKEY_TLS|g" \
        -e "s|@USERNAME@|$USERNAME|g" -e "s|@PASSWORD@|$PASSWORD|g" \
        -e "s|@SIGN_KEY@|$SIGN_KEY|g" -e "s|@SIGN_SECRET@|$SIGN_SECRET|g" \
        -e "s|@USER@|$USER_LINE|g" -e "s|@ACCESS_LOG@|${ACCESS_LINE}|g" \
        -e "s|@PROXY_WORKERS@|$PROXY_WORKERS|g" -e "s|@UPSTREAM_WORKERS@|$UPSTREAM_WORKERS|g" \
        -e "s|@TOKEN_PORT@|$TOKEN_PORT|g" -e "s|@MINT_PORT@|$MINT_PORT|g" \
        -e "s|@BEARER_TOKEN@|$BEARER_TOKEN|g" -e "s|@AWS_KEY_ID@|$AWS_KEY_ID|g" -e "s|@AWS_SECRET@|$AWS_SECRET|g" -e "s|@POOL_SIZE@|$POOL_SIZE|g" \
        -e "s|@ECHO_MODULE@|$ECHO_MODULE|g" -e "s|@MINT_MS@|$MINT_MS|g" \
        -e "s|@MINT_SECONDS@|$(awk -v ms="$MINT_MS" 'BEGIN { printf "%.3f", ms / 1000 }')|g" \
        "$1" >"$2"
}
fill "$BENCH/upstream-nginx.conf.in" "$WORK/upstream.conf"
fill "$BENCH/peer-nginx.conf.in" "$WORK/peer.conf"
saved=$ACCESS_LINE
ACCESS_LINE=$ACCESS_ON
fill "$BENCH/peer-nginx.conf.in" "$WORK/peer-log.conf"
ACCESS_LINE=$saved
fill "$BENCH/sidekey.toml.in" "$WORK/sidekey.toml"
cat "$WORK/sidekey.toml" >"$WORK/sidekey-https.toml"
fill "$BENCH/sidekey-https.toml.in" "$WORK/sidekey-https.part.toml"
cat "$WORK/sidekey-https.part.toml" >>"$WORK/sidekey-https.toml"
fill "$BENCH/mint-nginx.conf.in" "$WORK/mint.conf"

# The most file descriptors we may have (idle-connection scenario).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# --- starting and stopping the three servers -------------------------------

UPSTREAM_PID=""
MINT_PID=""
NGINX_PID=""
SIDEKEY_PID=""

start_upstream() {
    "$NGINX" -p "$WORK" -e "$WORK/upstream-error.log" -c "$WORK/upstream.conf" -g 'daemon off;' \
        >>"$WORK/upstream.out" 2>&1 &
    UPSTREAM_PID=$!
    PIDS+=("$UPSTREAM_PID")
    wait_listen "$UP_PLAIN" "$UPSTREAM_PID" && wait_listen "$UP_TLS" "$UPSTREAM_PID" &&
        wait_listen "$TOKEN_PORT" "$UPSTREAM_PID" ||
        die "the upstream nginx did not start: $(tail -n5 "$WORK/upstream-error.log")"
}

# The one-time token endpoint (nginx with the echo module): MINT_MS per
# mint, one line in mints.log per mint.
start_mint() {
    : >"$WORK/mints.log"
    "$NGINX" -p "$WORK" -e "$WORK/mint-error.log" -c "$WORK/mint.conf" -g 'daemon off;' \
        >>"$WORK/mint.out" 2>&1 &
    MINT_PID=$!
    PIDS+=("$MINT_PID")
    wait_listen "$MINT_PORT" "$MINT_PID" ||
        die "the mint server (nginx) did not start: $(tail -n5 "$WORK/mint-error.log")"
}

# Mints so far.
mint_count() { wc -l <"$WORK/mints.log"; }

# The config start_nginx runs: peer-log.conf has the access log on.
PEER_CONFIG="$WORK/peer.conf"

# start_nginx [wrapper...]: the peer proxy, optionally under valgrind (then
# in one process, so that every instruction is counted).
start_nginx() {
    local -a extra=('daemon off;')
    [[ $# -gt 0 ]] && extra=('daemon off; master_process off;')
    "$@" "$NGINX" -p "$WORK" -e "$WORK/peer-error.log" -c "$PEER_CONFIG" -g "${extra[0]}" \
        >>"$WORK/peer.out" 2>&1 &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
    wait_listen "$PEER" "$NGINX_PID" 120 && wait_listen "$PEER_TLS" "$NGINX_PID" 120 ||
        die "nginx (peer) did not start: $(tail -n5 "$WORK/peer-error.log")"
}

# The config start_sidekey runs: sidekey-https.toml adds [proxy.intercept]
# and a wildcard route for the HTTPS-client measurements.
SIDEKEY_CONFIG="$WORK/sidekey.toml"

start_sidekey() {
    RUST_LOG=$SIDEKEY_LOG "$@" "$SIDEKEY" --log-format "$SIDEKEY_FORMAT" run --config "$SIDEKEY_CONFIG" \
        >>"$WORK/sidekey.out" 2>>"$WORK/sidekey.log" &
    SIDEKEY_PID=$!
    PIDS+=("$SIDEKEY_PID")
    wait_listen "$SIDEKEY_PORT" "$SIDEKEY_PID" 120 &&
        { [[ $SIDEKEY_CONFIG != *https* ]] || wait_listen "$SIDEKEY_TLS" "$SIDEKEY_PID" 120; } ||
        die "sidekey did not start: $(tail -n5 "$WORK/sidekey.log")"
}

stop_nginx() { [[ -n $NGINX_PID ]] && { stop_pid "$NGINX_PID" QUIT; untrack "$NGINX_PID"; NGINX_PID=""; }; return 0; }
stop_sidekey() { [[ -n $SIDEKEY_PID ]] && { stop_pid "$SIDEKEY_PID" TERM; untrack "$SIDEKEY_PID"; SIDEKEY_PID=""; }; return 0; }

# --- what each target and scenario means -------------------------------------

# The request path each scenario sends (through a proxy).
path_of() {
    case $1 in
    signed) echo "/signed/v1/items?id=42" ;;
    sigv4) echo "/sigv4/v1/items?id=42" ;;
    cached) echo "/bearer/v1/items?id=42" ;;
    onetime | onetime_pool) echo "/onetime/v1/items?id=42" ;;
    *) echo "/v1/items?id=42" ;;
    esac
}

host_of() {
    case $1 in
    plain) echo plain.bench.test ;;
    tls) echo tls.bench.test ;;
    signed) echo signed.bench.test ;;
    sigv4) echo sigv4.bench.test ;;
    allow) echo allow.bench.test ;;
    cached) echo cached.bench.test ;;
    onetime) echo onetime.bench.test ;;
    onetime_pool) echo onetime-pool.bench.test ;;
    esac
}

# url_of SCENARIO TARGET: what a client sends to TARGET.
url_of() {
    local s=$1 t=$2
    case $t in
    # sidekey's Basic route, run in the same reps as the route it is
    # compared with.
    basic) url_of plain sidekey ;;
    direct)
        case $s in
        tls) echo "https://127.0.0.1:$UP_TLS$(path_of "$s")" ;;
        # The client signs itself: same shape, a dummy signature.
        signed) echo "http://127.0.0.1:$UP_PLAIN$(path_of "$s")&identifier=$SIGN_KEY&timestamp=1700000000&authSignature=0123456789abcdef0123456789abcdef01234567" ;;
        # A token of the same shape as the mint server's.
        onetime | onetime_pool) echo "http://127.0.0.1:$UP_PLAIN$(path_of "$s")&access_token=0123456789abcdef0123456789abcdef" ;;
        *) echo "http://127.0.0.1:$UP_PLAIN$(path_of "$s")" ;;
        esac
        ;;
    nginx) echo "http://127.0.0.1:$PEER$(path_of "$s")" ;;
    sidekey) echo "http://127.0.0.1:$SIDEKEY_PORT$(path_of "$s")" ;;
    esac
}

# Headers (one per line) a client sends to TARGET.
headers_of() {
    local s=$1 t=$2
    if [[ $t == basic ]]; then
        headers_of plain sidekey
        return 0
    fi
    echo "Host: $(host_of "$s")"
    if [[ $t == direct ]]; then
        case $s in
        plain | tls | allow) echo "Authorization: $BASIC" ;;
        cached) echo "Authorization: Bearer $BEARER_TOKEN" ;;
        # The client signs itself: same shape, a dummy signature.
        sigv4)
            echo "Authorization: AWS4-HMAC-SHA256 Credential=$AWS_KEY_ID/20260101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=$(printf '0123456789abcdef%.0s' 1 2 3 4)"
            echo "x-amz-content-sha256: UNSIGNED-PAYLOAD"
            echo "x-amz-date: 20260101T000000Z"
            ;;
        esac
    fi
    return 0
}

targets_of() {
    case $1 in
    # nginx has no HMAC URL signing, token fetching or minting without
    # extra modules. `basic` is sidekey's Basic route in the same reps, the
    # baseline of the route-vs-Basic ratios.
    signed | cached | onetime | onetime_pool | sigv4 | allow) echo "direct sidekey basic" ;;
    *) echo "direct nginx sidekey" ;;
    esac
}

curl_args() {
    local s=$1 t=$2 h
    local -a args=(-s -k --max-time 10)
    while IFS= read -r h; do args+=(-H "$h"); done < <(headers_of "$s" "$t")
    printf '%s\n' "${args[@]}"
}

# HTTP status of one request to TARGET (extra curl args may follow).
probe() {
    local s=$1 t=$2
    shift 2
    local -a args
    mapfile -t args < <(curl_args "$s" "$t")
    curl "${args[@]}" -o /dev/null -w '%{http_code}' "$@" "$(url_of "$s" "$t")" || echo 000
}

declare -A AUTH_OK=()

check_auth() {
    local s t code
    # The upstream must refuse a request without the credential, or the
    # check below proves nothing.
    code=$(curl -s -k --max-time 10 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$UP_PLAIN/v1/items" || echo 000)
    [[ $code == 401 ]] || die "the upstream answered $code without a credential (want 401)"
    code=$(curl -s -k --max-time 10 -o /dev/null -w '%{http_code}' -H "Authorization: $BASIC" "http://127.0.0.1:$UP_PLAIN/sigv4/x" || echo 000)
    [[ $code == 401 ]] || die "the upstream answered $code to a request without SigV4 (want 401)"
    code=$(curl -s -k --max-time 10 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$UP_PLAIN/signed/x" || echo 000)
    [[ $code == 401 ]] || die "the upstream answered $code to an unsigned URL (want 401)"
    code=$(curl -s -k --max-time 10 -o /dev/null -w '%{http_code}' -H "Authorization: $BASIC" \
        "http://127.0.0.1:$UP_PLAIN/bearer/x" || echo 000)
    [[ $code == 401 ]] || die "the upstream answered $code to a wrong Bearer token (want 401)"
    code=$(curl -s -k --max-time 10 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$UP_PLAIN/onetime/x?id=1" || echo 000)
    [[ $code == 401 ]] || die "the upstream answered $code without an access_token (want 401)"
    for s in $SCENARIOS; do
        for t in $(targets_of "$s"); do
            code=$(probe "$s" "$t")
            if [[ $code == 200 ]]; then
                AUTH_OK[$s.$t]=1
                log "auth ok: $s via $t (200)"
            else
                AUTH_OK[$s.$t]=0
                log "AUTH FAILED: $s via $t answered $code; it is flagged, not ranked"
            fi
        done
    done
}

# --- loads -----------------------------------------------------------------

RESULTS="$WORK/results.tsv"
: >"$RESULTS"

# The process whose CPU time a target's requests cost.
pid_of() {
    case $1 in
    nginx) echo "$NGINX_PID" ;;
    sidekey | basic) echo "$SIDEKEY_PID" ;;
    *) echo "" ;;
    esac
}

# run_wrk SCENARIO TARGET LOAD SECONDS
#   -> "rps p50 p90 p99 non2xx errors cpu_us_per_request requests
#       upstream_cpu_us_per_request mint_cpu_us_per_request"
# (the last two: what the same requests cost the upstream nginx and the mint
# server, which share the cores with the proxy)
run_wrk() {
    local s=$1 t=$2 load=$3 secs=$4 h out pid c0=0 c1=0 u0 u1 m0=0 m1=0
    local -a args=(--latency -s "$BENCH/report.lua" -d "${secs}s" --timeout 5s)
    case $load in
    c1) args+=(-t1 -c1) ;;
    c1p) args+=(-t1 -c1) ;;
    # wrk opens a new connection when the answer says `Connection: close`.
    close) args+=(-t2 "-c$CLOSE_CONNS" -H 'Connection: close') ;;
    *) args+=(-t2 "-c$CONNS") ;;
    esac
    local pace=0
    [[ $load == c1p ]] && pace=$PACE_MS
    while IFS= read -r h; do args+=(-H "$h"); done < <(headers_of "$s" "$t")
    pid=$(pid_of "$t")
    [[ -n $pid ]] && c0=$(cpu_ticks "$pid")
    u0=$(cpu_ticks "$UPSTREAM_PID")
    [[ -n $MINT_PID ]] && m0=$(cpu_ticks "$MINT_PID")
    out=$(BENCH_PACE_MS=$pace timeout $((secs + 30)) wrk "${args[@]}" "$(url_of "$s" "$t")" 2>&1) || true
    [[ -n $pid ]] && c1=$(cpu_ticks "$pid")
    u1=$(cpu_ticks "$UPSTREAM_PID")
    [[ -n $MINT_PID ]] && m1=$(cpu_ticks "$MINT_PID")
    awk -v cpu=$((c1 - c0)) -v up=$((u1 - u0)) -v mint=$((m1 - m0)) -v hz="$CLK_TCK" \
        -v has_pid="${pid:+1}" '
        function per_request(ticks) { return sprintf("%.1f", ticks * 1e6 / hz / v["requests"]) }
        /^BENCH/ {
        for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        ok = v["requests"] > 0
        cpu_us = (has_pid && ok) ? per_request(cpu) : "-"
        printf "%.0f %s %s %s %s %s %s %d %s %s\n", v["requests"] / (v["duration_us"] / 1e6),
            v["p50"], v["p90"], v["p99"], v["non2xx"], v["errors"], cpu_us, v["requests"],
            ok ? per_request(up) : "-", ok ? per_request(mint) : "-"
    }' <<<"$out"
}

# System calls per new connection, by proxy (see SYSCALLS).
declare -A SYSCALLS_PER_CONN=()

# strace_close TARGET: one `close` load of the plain scenario with
# `strace -c -f` on TARGET's processes -> "total (name n.n, ...)" per
# accepted connection (successful accept4 calls).
strace_close() {
    local t=$1 pid p out tracer
    pid=$(pid_of "$t")
    [[ -n $pid ]] || return 0
    local -a attach=()
    for p in $(tree_pids "$pid"); do attach+=(-p "$p"); done
    out="$WORK/strace.$t.txt"
    strace -c -f -o "$out" "${attach[@]}" 2>/dev/null &
    tracer=$!
    # Wait until every process is traced (TracerPid set), not a fixed time.
    for _ in $(seq 1 100); do
        local all=1
        for p in $(tree_pids "$pid"); do
            [[ $(awk '/^TracerPid:/ { print $2 }' "/proc/$p/status" 2>/dev/null) != 0 ]] || all=0
        done
        [[ $all == 1 ]] && break
        sleep 0.1
    done
    run_wrk plain "$t" close "$DURATION" >/dev/null
    kill -INT "$tracer" 2>/dev/null || true
    wait "$tracer" 2>/dev/null || true
    # strace -c rows: % time, seconds, usecs/call, calls, [errors,] syscall.
    awk '
        $1 ~ /^[0-9.]+$/ && $NF != "total" {
            calls[$NF] = $4; errs = (NF == 6) ? $5 : 0; total += $4
            if ($NF == "accept4" || $NF == "accept") conns += $4 - errs
        }
        END {
            if (conns == 0) exit
            printf "%.1f\n", total / conns
            for (k in calls) if (calls[k] / conns >= 0.05) printf "%s %.1f\n", k, calls[k] / conns
        }' "$out" | {
        local total names
        read -r total || return 0
        names=$(sort | awk '{ printf "%s%s %s", sep, $1, $2; sep = ", " }')
        echo "$total ($names)"
    }
}

measure_syscalls() {
    [[ $SYSCALLS == 1 ]] || return 0
    local t
    for t in nginx sidekey; do
        [[ ${AUTH_OK[plain.$t]:-0} == 1 ]] || continue
        log "strace -c: $t, plain close load"
        SYSCALLS_PER_CONN[$t]=$(strace_close "$t")
    done
}

# requests_of RUN_WRK_OUTPUT: the requests wrk completed (field 8).
requests_of() { awk '{ print $8 + 0 }' <<<"$1"; }

# One-time scenarios: mints during the scenario's loads, and requests
# sidekey served (warm-ups included), per scenario.
declare -A MINTS=() SERVED=()

run_loads() {
    local rep s load t i n r m0 m1
    local -a targets order
    for s in $SCENARIOS; do
        read -r -a targets <<<"$(targets_of "$s")"
        SERVED[$s]=0
        m0=$(mint_count)
        for load in $LOADS; do
            for t in "${targets[@]}"; do
                [[ ${AUTH_OK[$s.$t]} == 1 ]] || continue
                r=$(run_wrk "$s" "$t" "$load" "$WARMUP")
                if [[ $t == sidekey && -n $r ]]; then SERVED[$s]=$((SERVED[$s] + $(requests_of "$r"))); fi
            done
            for ((rep = 1; rep <= REPS; rep++)); do
                # Rotate the order so that no target always runs first.
                n=${#targets[@]}
                order=()
                for ((i = 0; i < n; i++)); do order+=("${targets[$(((i + rep - 1) % n))]}"); done
                for t in "${order[@]}"; do
                    [[ ${AUTH_OK[$s.$t]} == 1 ]] || continue
                    r=$(run_wrk "$s" "$t" "$load" "$DURATION")
                    [[ -n $r ]] || r="0 0 0 0 0 1 - 0 - -"
                    if [[ $t == sidekey ]]; then SERVED[$s]=$((SERVED[$s] + $(requests_of "$r"))); fi
                    log "$s $load rep $rep $t: $r"
                    printf '%s\t%s\t%s\t%s\t%s\n' "$s" "$load" "$t" "$rep" "${r// /$'\t'}" >>"$RESULTS"
                done
            done
        done
        m1=$(mint_count)
        if [[ -n $m0 && -n $m1 ]]; then MINTS[$s]=$((m1 - m0)); fi
    done
}

# median SCENARIO LOAD TARGET COLUMN (5=rps 6=p50 7=p90 8=p99 11=CPU µs/req,
# 13 and 14 the upstream's and the mint server's CPU µs/req; 9 non-2xx and
# 10 socket errors are summed by `failures`, 12 is requests)
median() {
    awk -F'\t' -v s="$1" -v l="$2" -v t="$3" -v c="$4" \
        '$1 == s && $2 == l && $3 == t && $c != "-" { print $c }' "$RESULTS" | sort -g |
        awk '{ a[NR] = $1 } END {
            if (NR == 0) print "";
            else if (NR % 2) print a[(NR + 1) / 2];
            else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# rep_ratio SCENARIO LOAD [OTHER [COLUMN]]: the median over reps of sidekey's
# value in COLUMN (5: req/s) divided by OTHER's (nginx) in the same rep (the
# two ran back to back, so a rep's ratio is less exposed to the machine's
# drift than a ratio of medians).
rep_ratio() {
    awk -F'\t' -v s="$1" -v l="$2" -v o="${3:-nginx}" -v c="${4:-5}" '
        $1 == s && $2 == l && $3 == "sidekey" { sk[$4] = $c }
        $1 == s && $2 == l && $3 == o { ng[$4] = $c }
        END { for (r in sk) if ((r in ng) && ng[r] > 0) printf "%.4f\n", sk[r] / ng[r] }' "$RESULTS" |
        sort -g | awk '{ a[NR] = $1 } END {
            if (NR == 0) print "-";
            else if (NR % 2) printf "%.2f\n", a[(NR + 1) / 2];
            else printf "%.2f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

failures() {
    awk -F'\t' -v s="$1" -v l="$2" -v t="$3" \
        '$1 == s && $2 == l && $3 == t { n += $9 + $10 } END { print n + 0 }' "$RESULTS"
}

is_token_scenario() {
    case $1 in cached | onetime | onetime_pool) return 0 ;; *) return 1 ;; esac
}

# --- instructions per request (callgrind) -------------------------------------

declare -A IR=()

# callgrind_total FILE: total Ir of a callgrind output.
callgrind_total() {
    awk '/^(summary|totals):/ { print $2; exit }' "$1"
}

# ir_run TARGET SCENARIO COUNT [close] -> total Ir of a proxy process that
# started, served COUNT requests on one keep-alive connection, and stopped.
# With `close`: COUNT connections instead, each accepted, one request with
# `Connection: close`, closed by the proxy (curl's num_connects proves it).
ir_run() {
    local t=$1 s=$2 count=$3 mode=${4:-keepalive} codes ok connects
    local out="$WORK/callgrind.$1.$2${4:+.$4}.$3${IR_TAG:-}.out"
    local -a vg=(valgrind --tool=callgrind --callgrind-out-file="$out") args
    case $t in
    nginx) start_nginx "${vg[@]}" ;;
    sidekey) start_sidekey "${vg[@]}" ;;
    esac
    mapfile -t args < <(curl_args "$s" "$t")
    [[ $mode == close ]] && args+=(-H 'Connection: close')
    # One curl, COUNT URLs (a glob): one keep-alive connection, or one
    # connection per URL when the proxy closes each.
    codes=$(curl "${args[@]}" --max-time 300 -o /dev/null -w '%{http_code} %{num_connects}\n' \
        "$(url_of "$s" "$t")&n=[100001-$((100000 + count))]" || true)
    ok=$(grep -c '^200 ' <<<"$codes" || true)
    connects=$(awk '{ n += $2 } END { print n + 0 }' <<<"$codes")
    case $t in
    nginx) stop_nginx ;;
    sidekey) stop_sidekey ;;
    esac
    [[ $ok == "$count" ]] || { log "callgrind $t $s $mode: only $ok of $count requests got 200"; echo ""; return; }
    case $mode in
    close) [[ $connects == "$count" ]] || { log "callgrind $t $s close: $connects connections, want $count"; echo ""; return; } ;;
    *) [[ $connects == 1 ]] || { log "callgrind $t $s: $connects connections, want 1"; echo ""; return; } ;;
    esac
    callgrind_total "$out"
}

measure_ir() {
    local s t n m
    for s in $SCENARIOS; do
        for t in $(targets_of "$s"); do
            [[ $t == direct || $t == basic || ${AUTH_OK[$s.$t]} != 1 ]] && continue
            # One-time scenarios: a mint is another process's work, and the
            # pool's refills are not per-request work of this process.
            # (The cached-token route is counted: a cache hit is per-request.)
            [[ $s == onetime || $s == onetime_pool ]] && continue
            log "callgrind: $t $s ($IR_M and $IR_N requests)"
            m=$(ir_run "$t" "$s" "$IR_M")
            n=$(ir_run "$t" "$s" "$IR_N")
            if [[ -n $m && -n $n ]]; then
                IR[$s.$t]=$(((n - m) / (IR_N - IR_M)))
                log "callgrind: $t $s: ${IR[$s.$t]} instructions/request"
            fi
        done
    done
}

# --- the access log: what a line costs each proxy ------------------------------

declare -A LOG_IRS=()

# Access lines in the proxy's log so far (sidekey: text or JSON request lines;
# nginx: lines of its access log, flushed at exit).
access_lines() {
    case $1 in
    nginx) [[ -e $WORK/peer-access.log ]] && wc -l <"$WORK/peer-access.log" || echo 0 ;;
    sidekey) grep -cE ': request route=|"message":"request"' "$WORK/sidekey.log" || true ;;
    esac
}

# The plain and tls scenarios again with the access logs on: nginx with its
# buffered `combined` log, sidekey with its default `info` line in text and
# in JSON. Each pair of runs must have logged every request.
measure_log_ir() {
    local s t mode m n before after
    [[ $LOG_IR == 1 && $CALLGRIND == 1 && $ACCESS_LOG == 0 ]] || return 0
    for s in $SCENARIOS; do
        [[ $s == plain || $s == tls ]] || continue
        for mode in nginx sidekey_text sidekey_json; do
            t=${mode%%_*}
            [[ ${AUTH_OK[$s.$t]:-0} == 1 ]] || continue
            PEER_CONFIG="$WORK/peer-log.conf"
            SIDEKEY_LOG=info
            SIDEKEY_FORMAT=${mode#sidekey_}
            IR_TAG=".log-${mode#sidekey_}"
            log "callgrind: $t $s with its access log on ($mode; $IR_M and $IR_N requests)"
            before=$(access_lines "$t")
            m=$(ir_run "$t" "$s" "$IR_M")
            n=$(ir_run "$t" "$s" "$IR_N")
            after=$(access_lines "$t")
            PEER_CONFIG="$WORK/peer.conf"
            SIDEKEY_LOG=warn
            SIDEKEY_FORMAT=$LOG_FORMAT
            IR_TAG=""
            if [[ $((after - before)) != $((IR_M + IR_N)) ]]; then
                log "callgrind: $t $s $mode: $((after - before)) access lines for $((IR_M + IR_N)) requests; not counted"
                continue
            fi
            [[ -n $m && -n $n ]] && LOG_IRS[$s.$mode]=$(((n - m) / (IR_N - IR_M)))
            log "callgrind: $t $s $mode: ${LOG_IRS[$s.$mode]:-failed} instructions/request"
        done
    done
}

# Instructions per accepted connection: a new client connection per request
# (`Connection: close`), the upstream connection kept alive by the proxy, so
# (Ir(N) - Ir(M)) / (N - M) is accept + one request + close.
declare -A CONN_IR_OF=()

measure_conn() {
    local s t n m
    [[ $CONN_IR == 1 && $CALLGRIND == 1 ]] || return 0
    for s in plain tls; do
        [[ " $SCENARIOS " == *" $s "* ]] || continue
        for t in nginx sidekey; do
            [[ ${AUTH_OK[$s.$t]:-0} == 1 ]] || continue
            log "callgrind: $t $s, a new connection per request ($IR_M and $IR_N connections)"
            m=$(ir_run "$t" "$s" "$IR_M" close)
            n=$(ir_run "$t" "$s" "$IR_N" close)
            if [[ -n $m && -n $n ]]; then
                CONN_IR_OF[$s.$t]=$(((n - m) / (IR_N - IR_M)))
                log "callgrind: $t $s: ${CONN_IR_OF[$s.$t]} instructions/connection"
            fi
        done
    done
}

log_table() {
    local s off on mode t
    [[ ${#LOG_IRS[@]} -gt 0 ]] || return 0
    echo
    echo "| access log (callgrind, instructions/request) | nginx (combined, buffer=64k flush=1s) | sidekey (text) | sidekey (--log-format json) |"
    echo "| --- | ---: | ---: | ---: |"
    for s in plain tls; do
        [[ -n ${IR[$s.sidekey]:-}${IR[$s.nginx]:-} ]] || continue
        echo "| $s: access log off | $(us "${IR[$s.nginx]:-}") | $(us "${IR[$s.sidekey]:-}") | $(us "${IR[$s.sidekey]:-}") |"
        echo "| $s: access log on | $(us "${LOG_IRS[$s.nginx]:-}") | $(us "${LOG_IRS[$s.sidekey_text]:-}") | $(us "${LOG_IRS[$s.sidekey_json]:-}") |"
        local -a diff=()
        for mode in nginx sidekey_text sidekey_json; do
            t=${mode%%_*}
            off=${IR[$s.$t]:-}
            on=${LOG_IRS[$s.$mode]:-}
            if [[ -n $off && -n $on ]]; then diff+=("$((on - off))"); else diff+=("-"); fi
        done
        echo "| $s: the access line (on − off) | ${diff[0]} | ${diff[1]} | ${diff[2]} |"
    done
    for s in plain tls; do
        [[ -n ${LOG_IRS[$s.sidekey_text]:-} && -n ${LOG_IRS[$s.sidekey_json]:-} ]] || continue
        echo
        echo "$s: sidekey JSON / text = $(awk -v a="${LOG_IRS[$s.sidekey_json]}" -v b="${LOG_IRS[$s.sidekey_text]}" 'BEGIN { printf "%.3f", a / b }')×$([[ -n ${LOG_IRS[$s.nginx]:-} ]] && echo "; sidekey text / nginx = $(awk -v a="${LOG_IRS[$s.sidekey_text]}" -v b="${LOG_IRS[$s.nginx]}" 'BEGIN { printf "%.3f", a / b }')×")"
    done
    return 0
}

conn_table() {
    local s
    [[ ${#CONN_IR_OF[@]} -gt 0 ]] || return 0
    echo
    echo "| a new connection per request (callgrind: accept, one request with \`Connection: close\`, close) | nginx | sidekey |"
    echo "| --- | ---: | ---: |"
    for s in plain tls; do
        [[ -n ${CONN_IR_OF[$s.nginx]:-}${CONN_IR_OF[$s.sidekey]:-} ]] || continue
        echo "| $s: instructions per connection | $(us "${CONN_IR_OF[$s.nginx]:-}") | $(us "${CONN_IR_OF[$s.sidekey]:-}") |"
    done
}

# --- HTTPS clients (TLS interception) ----------------------------------------

declare -A HS_IR=()

# ir_https MODE TARGET COUNT -> total Ir of a proxy process that started,
# served COUNT requests of the tls scenario (TLS upstream), and stopped:
#   tunnel     one CONNECT tunnel (sidekey), COUNT HTTP/1.1 requests on its
#              one TLS connection: per request, the handshake cancels out;
#   tunnel_h2  the same over HTTP/2 (what curl picks by ALPN on its own);
#   handshake  COUNT new TLS connections to the proxy's TLS port, each a full
#              handshake (no session reuse) and one HTTP/1.1 request
#              (Connection: close; nginx's TLS server offers no h2).
# curl's num_connects proves which of the two it was.
ir_https() {
    local mode=$1 t=$2 count=$3 out="$WORK/callgrind.$2.$1.$3.out" lines ok connects port ca
    local -a vg=(valgrind --tool=callgrind --callgrind-out-file="$out") args
    args=(-s --max-time 600 -o /dev/null -w '%{http_code} %{num_connects}\n')
    case $t in
    nginx) start_nginx "${vg[@]}"; port=$PEER_TLS; ca=$WORK/ca.pem ;;
    sidekey) start_sidekey "${vg[@]}"; port=$SIDEKEY_TLS; ca=$SIDEKEY_CA ;;
    esac
    local url_path
    url_path="$(path_of tls)&n=[100001-$((100000 + count))]"
    case $mode in
    tunnel) args+=(--http1.1 --cacert "$SIDEKEY_CA" -x "http://127.0.0.1:$SIDEKEY_PORT" "https://tls.bench.test$url_path") ;;
    tunnel_h2) args+=(--http2 --cacert "$SIDEKEY_CA" -x "http://127.0.0.1:$SIDEKEY_PORT" "https://tls.bench.test$url_path") ;;
    handshake) args+=(--http1.1 --cacert "$ca" --no-sessionid -H 'Connection: close'
        --resolve "tls.bench.test:$port:127.0.0.1" "https://tls.bench.test:$port$url_path") ;;
    esac
    lines=$(curl "${args[@]}" || true)
    ok=$(grep -c '^200 ' <<<"$lines" || true)
    connects=$(awk '{ n += $2 } END { print n + 0 }' <<<"$lines")
    case $t in
    nginx) stop_nginx ;;
    sidekey) stop_sidekey ;;
    esac
    [[ $ok == "$count" ]] || { log "callgrind $t $mode: only $ok of $count requests got 200"; echo ""; return; }
    case $mode in
    tunnel | tunnel_h2) [[ $connects == 1 ]] || { log "callgrind $t $mode: $connects connections, want 1"; echo ""; return; } ;;
    handshake) [[ $connects == "$count" ]] || { log "callgrind $t $mode: $connects connections, want $count"; echo ""; return; } ;;
    esac
    callgrind_total "$out"
}

measure_https() {
    local t m n mode
    [[ $HTTPS_CLIENTS == 1 && $CALLGRIND == 1 ]] || return 0
    [[ ${AUTH_OK[tls.sidekey]:-0} == 1 ]] || { log "https clients: skipped (tls route not accepted)"; return 0; }
    SIDEKEY_CONFIG="$WORK/sidekey-https.toml"
    for mode in tunnel tunnel_h2; do
        log "callgrind: sidekey tls inside a CONNECT tunnel, $mode ($IR_M and $IR_N requests)"
        m=$(ir_https "$mode" sidekey "$IR_M")
        n=$(ir_https "$mode" sidekey "$IR_N")
        [[ -n $m && -n $n ]] && HS_IR[$mode.sidekey]=$(((n - m) / (IR_N - IR_M)))
        log "callgrind: sidekey $mode: ${HS_IR[$mode.sidekey]:-failed} instructions/request"
    done
    for t in nginx sidekey; do
        log "callgrind: $t TLS from clients, a new connection per request ($HS_M and $HS_N connections)"
        m=$(ir_https handshake "$t" "$HS_M")
        n=$(ir_https handshake "$t" "$HS_N")
        [[ -n $m && -n $n ]] && HS_IR[handshake.$t]=$(((n - m) / (HS_N - HS_M)))
        log "callgrind: $t handshake: ${HS_IR[handshake.$t]:-failed} instructions/connection"
    done
    SIDEKEY_CONFIG="$WORK/sidekey.toml"
}

# The cached route with [proxy.shared_cache] on: the local copy is the hot
# path, so a request whose token is cached must cost what it costs without
# Redis (issue #15: within 1.02x).
measure_shared() {
    local m n port pid
    [[ $SHARED_CACHE == 1 && $CALLGRIND == 1 && -n ${IR[cached.sidekey]:-} ]] || return 0
    command -v redis-server >/dev/null || { log "shared cache: skipped (no redis-server; apt-get install redis-server)"; return 0; }
    port=$(distinct_port); TAKEN+=("$port")
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no >"$WORK/redis.out" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_listen "$port" "$pid" || { log "shared cache: redis-server did not start"; return 0; }
    { cat "$WORK/sidekey.toml"
      printf '\n[proxy.shared_cache]\nurl = "redis://127.0.0.1:%s/0"\nencryption_key = "%s"\n' \
          "$port" "$(openssl rand -base64 32)"; } >"$WORK/sidekey-shared.toml"
    SIDEKEY_CONFIG="$WORK/sidekey-shared.toml"
    IR_TAG=.shared
    log "callgrind: sidekey cached with shared_cache on ($IR_M and $IR_N requests)"
    m=$(ir_run sidekey cached "$IR_M")
    n=$(ir_run sidekey cached "$IR_N")
    IR_TAG=""
    SIDEKEY_CONFIG="$WORK/sidekey.toml"
    [[ -n $m && -n $n ]] && IR[cached_shared.sidekey]=$(((n - m) / (IR_N - IR_M)))
    log "callgrind: sidekey cached, shared_cache on: ${IR[cached_shared.sidekey]:-failed} instructions/request"
    stop_pid "$pid"
    untrack "$pid"
}

shared_table() {
    [[ -n ${IR[cached_shared.sidekey]:-} ]] || return 0
    echo
    echo "| cached-token route (callgrind) | instructions/request |"
    echo "| --- | ---: |"
    echo "| without [proxy.shared_cache] | ${IR[cached.sidekey]} |"
    echo "| with [proxy.shared_cache] (Redis on loopback) | ${IR[cached_shared.sidekey]} ($(awk -v a="${IR[cached_shared.sidekey]}" -v b="${IR[cached.sidekey]}" 'BEGIN { printf "%.3f", a / b }')×) |"
}

declare -a LEAF_RSS=()

# LEAF_HOSTS distinct hosts through CONNECT to the wildcard route, one new
# tunnel (and leaf, until the cache is full) each: sidekey's RSS every 500.
leaf_scenario() {
    local line
    [[ $LEAF_HOSTS -gt 0 ]] || return 0
    SIDEKEY_CONFIG="$WORK/sidekey-https.toml"
    start_sidekey
    log "leaf cache: $LEAF_HOSTS distinct hosts through CONNECT (*.wild.bench.test)"
    LEAF_RSS=("start:$(mem_kib VmRSS "$SIDEKEY_PID")")
    while IFS= read -r line; do
        log "leaf cache: $line"
        LEAF_RSS+=("$line")
    done < <(timeout 600 python3 "$BENCH/leaf_hosts.py" "$SIDEKEY_PORT" "$SIDEKEY_CA" "$LEAF_HOSTS" 500 \
        wild.bench.test "$SIDEKEY_PID" || true)
    stop_sidekey
    SIDEKEY_CONFIG="$WORK/sidekey.toml"
}

# --- resource scenarios --------------------------------------------------------

declare -A IDLE_RSS=() PEAK_RSS=() UPLOAD=() IDLE_CONN=()

upload_scenario() {
    local t rss0 hwm code secs
    [[ $UPLOAD_MB -gt 0 ]] || return 0
    head -c "$((UPLOAD_MB * 1024 * 1024))" /dev/urandom >"$WORK/upload.bin"
    for t in nginx sidekey; do
        [[ ${AUTH_OK[plain.$t]:-0} == 1 ]] || { UPLOAD[$t]="skipped (auth)"; continue; }
        case $t in nginx) start_nginx ;; sidekey) start_sidekey ;; esac
        local pid=$NGINX_PID
        [[ $t == sidekey ]] && pid=$SIDEKEY_PID
        probe plain "$t" >/dev/null # connect the upstream pool first
        rss0=$(mem_kib VmRSS "$pid")
        read -r code secs < <(probe plain "$t" --max-time 120 -H 'Expect:' \
            -H 'Content-Type: application/octet-stream' --data-binary "@$WORK/upload.bin" \
            -w '%{http_code} %{time_total}\n') || true
        hwm=$(mem_kib VmHWM "$pid")
        UPLOAD[$t]="+$(mib $((hwm - rss0))) MiB (HTTP $code, ${secs}s)"
        log "upload ${UPLOAD_MB} MB via $t: RSS $(mib "$rss0") MiB -> peak $(mib "$hwm") MiB, HTTP $code in ${secs}s"
        case $t in nginx) stop_nginx ;; sidekey) stop_sidekey ;; esac
    done
    rm -f "$WORK/upload.bin"
}

# idle_scenario [used]: IDLE_CONNS connections that never send anything, or
# (used) that each made one request and now idle between requests.
idle_scenario() {
    local mode=${1:-fresh} t pid rss0 line port rss
    local -a req=()
    [[ $IDLE_CONNS -gt 0 ]] || return 0
    [[ $mode == used ]] && req=(--request plain.bench.test)
    for t in nginx sidekey; do
        case $t in nginx) start_nginx; port=$PEER ;; sidekey) start_sidekey; port=$SIDEKEY_PORT ;; esac
        pid=$NGINX_PID
        [[ $t == sidekey ]] && pid=$SIDEKEY_PID
        probe plain "$t" >/dev/null
        rss0=$(mem_kib VmRSS "$pid")
        # shellcheck disable=SC2046
        line=$(timeout 180 python3 "$BENCH/idle_conns.py" "$port" "$IDLE_CONNS" 3 "${req[@]}" $(tree_pids "$pid") || true)
        rss=${line##*rss_kib=}
        if [[ -n $line ]]; then
            IDLE_CONN[$mode.$t]="$(mib "$rss") MiB ($(awk -v a="$rss" -v b="$rss0" -v n="$IDLE_CONNS" \
                'BEGIN { printf "%.1f", (a - b) / n }') KiB/conn; ${line%% rss_kib*})"
        else
            IDLE_CONN[$mode.$t]="failed"
        fi
        log "$IDLE_CONNS idle ($mode) connections to $t: ${IDLE_CONN[$mode.$t]}"
        case $t in nginx) stop_nginx ;; sidekey) stop_sidekey ;; esac
    done
}

# --- the run ---------------------------------------------------------------------

log "work dir $WORK; ports: upstream $UP_PLAIN (http) $UP_TLS (https), nginx $PEER, sidekey $SIDEKEY_PORT"
log "reps=$REPS duration=${DURATION}s conns=$CONNS callgrind=$CALLGRIND (N=$IR_N M=$IR_M) idle=$IDLE_CONNS upload=${UPLOAD_MB}MB"
start_upstream
start_mint
start_nginx
start_sidekey
check_auth
IDLE_RSS[nginx]=$(mem_kib VmRSS "$NGINX_PID")
IDLE_RSS[sidekey]=$(mem_kib VmRSS "$SIDEKEY_PID")

run_loads
PEAK_RSS[nginx]=$(mem_kib VmHWM "$NGINX_PID")
PEAK_RSS[sidekey]=$(mem_kib VmHWM "$SIDEKEY_PID")
measure_syscalls
stop_nginx
stop_sidekey

[[ $CALLGRIND == 1 ]] && measure_ir
measure_log_ir
measure_conn
measure_https
measure_shared
leaf_scenario
upload_scenario
idle_scenario fresh
idle_scenario used

# --- the report ----------------------------------------------------------------------

us() { [[ -n $1 ]] && echo "$1" || echo "-"; }

print_tables() {
    local s load t rps p50 p90 p99 base base90 added added90 ratio nrps ir peak flag cpu
    echo
    echo "sidekey vs nginx, $(date -u +%Y-%m-%d), $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), $(nproc) cores;"
    echo "medians of $REPS alternating reps of ${DURATION}s; loads: c$CONNS = wrk -t2 -c$CONNS, c1 = wrk -t1 -c1,"
    echo "c1p = wrk -t1 -c1 with ${PACE_MS} ms before each request (latency counted from the request's write),"
    echo "close = wrk -t2 -c$CLOSE_CONNS with \`Connection: close\` (a new connection per request)."
    echo
    echo "| scenario | load | target | req/s | p50 µs | p90 µs | p99 µs | added p50 µs | added p90 µs | sidekey/nginx req/s | instr/req | CPU µs/req | peak RSS MiB |"
    echo "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for s in $SCENARIOS; do
        for load in $LOADS; do
            base=$(median "$s" "$load" direct 6)
            base90=$(median "$s" "$load" direct 7)
            nrps=$(median "$s" "$load" nginx 5)
            for t in $(targets_of "$s"); do
                if [[ ${AUTH_OK[$s.$t]} != 1 ]]; then
                    echo "| $s | $load | $t | FAILED: credential not accepted (not ranked) | | | | | | | | | |"
                    continue
                fi
                rps=$(median "$s" "$load" "$t" 5)
                p50=$(median "$s" "$load" "$t" 6)
                p90=$(median "$s" "$load" "$t" 7)
                p99=$(median "$s" "$load" "$t" 8)
                flag=""
                [[ $(failures "$s" "$load" "$t") -gt 0 ]] && flag=" (errors/non-2xx!)"
                added="-"
                [[ $t != direct && -n $base && -n $p50 ]] && added=$((p50 - base))
                added90="-"
                [[ $t != direct && -n $base90 && -n $p90 ]] && added90=$((p90 - base90))
                ratio="-"
                [[ $t == sidekey && -n $nrps && ${AUTH_OK[$s.nginx]:-0} == 1 ]] &&
                    ratio=$(rep_ratio "$s" "$load")
                ir=$(us "${IR[$s.$t]:-}")
                cpu=$(us "$(median "$s" "$load" "$t" 11)")
                peak="-"
                [[ $t == nginx || $t == sidekey ]] && peak=$(mib "${PEAK_RSS[$t]}")
                echo "| $s | $load | $t | $(us "$rps")$flag | $(us "$p50") | $(us "$p90") | $(us "$p99") | $added | $added90 | $ratio | $ir | $cpu | $peak |"
            done
        done
    done
    echo
    echo "| resources | nginx | sidekey |"
    echo "| --- | ---: | ---: |"
    echo "| idle RSS (started, one request served) | $(mib "${IDLE_RSS[nginx]}") MiB | $(mib "${IDLE_RSS[sidekey]}") MiB |"
    echo "| peak RSS over the loads | $(mib "${PEAK_RSS[nginx]}") MiB | $(mib "${PEAK_RSS[sidekey]}") MiB |"
    [[ $UPLOAD_MB -gt 0 ]] &&
        echo "| ${UPLOAD_MB} MB upload: peak RSS minus RSS before | ${UPLOAD[nginx]:-skipped} | ${UPLOAD[sidekey]:-skipped} |"
    if [[ $IDLE_CONNS -gt 0 ]]; then
        echo "| $IDLE_CONNS idle client connections (never sent a byte): RSS | ${IDLE_CONN[fresh.nginx]:-skipped} | ${IDLE_CONN[fresh.sidekey]:-skipped} |"
        echo "| $IDLE_CONNS keep-alive connections idle after one request: RSS | ${IDLE_CONN[used.nginx]:-skipped} | ${IDLE_CONN[used.sidekey]:-skipped} |"
    fi
    echo
    echo "nginx figures are the sum over its master and $PROXY_WORKERS worker processes."
    [[ $SCENARIOS == *signed* ]] && echo "signed: nginx has no equivalent (HMAC URL signing needs extra modules): sidekey vs direct only."
    [[ $SCENARIOS == *sigv4* ]] &&
        echo "sigv4: aws_sigv4, payload = \"unsigned\" (the upstream checks the header's shape; tests/aws_sigv4.rs checks the HMAC); sidekey vs direct only."
    [[ $SCENARIOS == *allow* ]] && echo "allow: the Basic route behind 20 [[route.allow]] rules, the last one matching; sidekey vs direct only."
    [[ $SCENARIOS == *cached* ]] &&
        echo "cached: Bearer token from a local token endpoint (ttl 15m), cached by sidekey; no nginx equivalent: sidekey vs direct only."
    [[ $SCENARIOS == *onetime* ]] &&
        echo "onetime / onetime_pool: a fresh ?access_token= per request from the mint server (${MINT_MS} ms per mint), pool_size 0 / $POOL_SIZE; sidekey vs direct only."
    [[ $ACCESS_LOG == 1 ]] && echo "Access logs on: nginx \`combined\` with buffer=64k flush=1s, sidekey \`info\` ($LOG_FORMAT), both to files."
    log_table
    conn_table
    syscalls_table
    https_tables
    shared_table
    route_vs_basic
}

# The SYSCALLS=1 measurement, when it ran.
syscalls_table() {
    [[ ${#SYSCALLS_PER_CONN[@]} -gt 0 ]] || return 0
    echo
    echo "| system calls per new connection (strace -c -f, plain close load, CLOSE_CONNS=$CLOSE_CONNS) | nginx | sidekey |"
    echo "| --- | ---: | ---: |"
    echo "| all, and by name (≥ 0.05 per connection) | $(us "${SYSCALLS_PER_CONN[nginx]:-}") | $(us "${SYSCALLS_PER_CONN[sidekey]:-}") |"
}

https_tables() {
    local ratio="" ratio2="" line hosts rss
    if [[ -n ${HS_IR[tunnel.sidekey]:-}${HS_IR[handshake.sidekey]:-}${HS_IR[handshake.nginx]:-} ]]; then
        [[ -n ${HS_IR[tunnel.sidekey]:-} && -n ${IR[tls.sidekey]:-} ]] &&
            ratio=" ($(awk -v a="${HS_IR[tunnel.sidekey]}" -v b="${IR[tls.sidekey]}" 'BEGIN { printf "%.2f", a / b }')× the plain listener's ${IR[tls.sidekey]})"
        [[ -n ${HS_IR[tunnel_h2.sidekey]:-} && -n ${IR[tls.sidekey]:-} ]] &&
            ratio2=" ($(awk -v a="${HS_IR[tunnel_h2.sidekey]}" -v b="${IR[tls.sidekey]}" 'BEGIN { printf "%.2f", a / b }')×)"
        echo
        echo "| HTTPS clients (callgrind, tls route: TLS upstream) | nginx | sidekey |"
        echo "| --- | ---: | ---: |"
        echo "| instructions per request inside a CONNECT tunnel (one client TLS connection), HTTP/1.1 | - | $(us "${HS_IR[tunnel.sidekey]:-}")$ratio |"
        echo "| the same over HTTP/2 | - | $(us "${HS_IR[tunnel_h2.sidekey]:-}")$ratio2 |"
        echo "| instructions per new client TLS connection (full ECDSA P-256 handshake + one request) | $(us "${HS_IR[handshake.nginx]:-}") | $(us "${HS_IR[handshake.sidekey]:-}") |"
    fi
    if [[ ${#LEAF_RSS[@]} -gt 1 ]]; then
        echo
        echo "| distinct hosts through CONNECT (wildcard route; leaf cache holds 1,024) | sidekey RSS |"
        echo "| ---: | ---: |"
        for line in "${LEAF_RSS[@]}"; do
            case $line in
            start:*) echo "| 0 (started) | $(mib "${line#start:}") MiB |" ;;
            *)
                hosts=${line#hosts=}; hosts=${hosts%% *}
                rss=${line##*rss_kib=}
                echo "| $hosts (${line#* }) | $(mib "$rss") MiB |" | sed 's/ rss_kib=[0-9]*//'
                ;;
            esac
        done
    fi
    return 0
}

# sidekey's routes against its own Basic route, run in the same reps
# (target `basic`): medians of the per-rep ratios.
route_vs_basic() {
    local s load rps p50 brps bp50 m
    echo
    echo "| sidekey route vs its Basic route (same reps) | load | req/s | Basic req/s | req/s ratio (median per rep) | p50 µs | Basic p50 µs | p50 ratio (median per rep) | sidekey CPU µs/req (route / Basic) | upstream CPU µs/req (route / Basic) | mint server CPU µs/req |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for s in $SCENARIOS; do
        case $s in signed | cached | onetime | onetime_pool | sigv4 | allow) ;; *) continue ;; esac
        [[ ${AUTH_OK[$s.sidekey]:-0} == 1 && ${AUTH_OK[$s.basic]:-0} == 1 ]] || continue
        for load in $LOADS; do
            rps=$(median "$s" "$load" sidekey 5)
            p50=$(median "$s" "$load" sidekey 6)
            brps=$(median "$s" "$load" basic 5)
            bp50=$(median "$s" "$load" basic 6)
            [[ -n $rps && -n $brps ]] || continue
            echo "| $s | $load | $rps | $brps | $(rep_ratio "$s" "$load" basic 5) | $p50 | $bp50 | $(rep_ratio "$s" "$load" basic 6) | $(median "$s" "$load" sidekey 11) / $(median "$s" "$load" basic 11) | $(median "$s" "$load" sidekey 13) / $(median "$s" "$load" basic 13) | $(median "$s" "$load" sidekey 14) |"
        done
    done
    for s in onetime onetime_pool; do
        m=${MINTS[$s]:-}
        [[ -n $m ]] || continue
        echo
        echo "$s: $m mints during its loads for ${SERVED[$s]:-?} requests through sidekey (warm-ups included; a pool mints ahead, so the two may differ by up to $POOL_SIZE)."
    done
    return 0
}

print_tables | tee "$WORK/report.md"
