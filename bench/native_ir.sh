#!/usr/bin/env bash
# Instructions per request of sidekey's Basic route and its aws_sigv4 route
# (unsigned payload), counted natively: the CPU's own SHA-256 code path
# (SHA-NI where it has it), which callgrind cannot show (valgrind's
# emulated CPU has no SHA extensions). No hardware counters needed: gdb
# single-steps sidekey's one worker thread (bench/native_ir.py).
#
#   bench/native_ir.sh                 # ~3 minutes on 2 cores
#   SIDEKEY_BIN=path bench/native_ir.sh
#
# The routes are counted in the order Basic, SigV4, SigV4, Basic (each on
# a new connection), so a drift over the run (the counts creep up a little
# from request to request while stepped) cancels out of the difference.
#
# Knobs (environment): WARMUP (20) requests per connection before counting,
# CYCLES (4) requests per connection counted (after one stepped, not counted), TOP (40) functions listed,
# LINES (a regex of function names: their cost per source line, sigv4 route),
# FREEZE_CLOCKS (1: the clocks stand still while a connection's requests
# are stepped, as on a loaded proxy, where they take microseconds; see
# "Time" in native_ir.py),
# KEEP (0: 1 keeps the temp dir, with the per-function TSV), SIDEKEY_BIN
# (default: `cargo build --release --locked`, honouring CARGO_TARGET_DIR).
#
# The request is compare.sh's callgrind request (curl's three fields,
# `&n=<i>` appended), on one keep-alive connection per route, to a local
# upstream (bench/native_ir_peers.py) that answers 200 only to the Basic
# credential or a SigV4 `Authorization` of the right shape.
set -euo pipefail
cd "$(dirname "$0")/.."
WARMUP=${WARMUP:-20} CYCLES=${CYCLES:-4} TOP=${TOP:-40} KEEP=${KEEP:-0}
command -v gdb >/dev/null || { echo "native_ir: needs gdb" >&2; exit 1; }
if [[ -z ${SIDEKEY_BIN:-} ]]; then
    cargo build --release --locked --bin sidekey >&2
    SIDEKEY_BIN=${CARGO_TARGET_DIR:-target}/release/sidekey
fi

WORK=$(mktemp -d /tmp/sidekey-native-ir.XXXXXX)
UP_PID="" CLIENT_PID="" SK_PID=""
cleanup() {
    local pid
    for pid in $CLIENT_PID $SK_PID $UP_PID; do
        kill "$pid" 2>/dev/null || true
    done
    if [[ $KEEP == 1 ]]; then echo "native_ir: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

USERNAME="bench-$(openssl rand -hex 4)"
PASSWORD=$(openssl rand -hex 16)
BASIC="Basic $(printf '%s:%s' "$USERNAME" "$PASSWORD" | base64 -w0)"
AWS_KEY_ID="AKIABENCH$(openssl rand -hex 4 | tr a-f A-F)"
AWS_SECRET=$(openssl rand -base64 30)

python3 bench/native_ir_peers.py upstream "$WORK/upstream.port" "$BASIC" &
UP_PID=$!
for _ in $(seq 100); do [[ -s $WORK/upstream.port ]] && break; sleep 0.1; done
UP=$(cat "$WORK/upstream.port")
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# The routes of bench/sidekey.toml.in, one worker thread.
cat >"$WORK/sidekey.toml" <<EOF
[proxy]
listen = "127.0.0.1:$PORT"
workers = 1

[[route]]
name = "plain"
host = "plain.bench.test"
upstream = "http://127.0.0.1:$UP"
[route.auth]
kind = "basic"
username = "$USERNAME"
password = "$PASSWORD"

[[route]]
name = "sigv4"
host = "sigv4.bench.test"
upstream = "http://127.0.0.1:$UP"
[route.auth]
kind = "aws_sigv4"
access_key_id = "$AWS_KEY_ID"
secret_access_key = "$AWS_SECRET"
region = "us-east-1"
service = "s3"
payload = "unsigned"
EOF
chmod 600 "$WORK/sidekey.toml"

python3 bench/native_ir_peers.py client "$PORT" $((WARMUP + CYCLES + 2)) \
    plain.bench.test "/v1/items?id=42" sigv4.bench.test "/sigv4/v1/items?id=42" \
    sigv4.bench.test "/sigv4/v1/items?id=42" plain.bench.test "/v1/items?id=42" &
CLIENT_PID=$!

NATIVE_IR_LABELS="basic sigv4 sigv4 basic" NATIVE_IR_WARMUP=$WARMUP NATIVE_IR_CYCLES=$CYCLES \
    NATIVE_IR_TOP=$TOP NATIVE_IR_OUT="$WORK/per_function.tsv" NATIVE_IR_PIDFILE="$WORK/sidekey.pid" \
    NATIVE_IR_REPORT="$WORK/report.txt" NATIVE_IR_LINES=${LINES:-} \
    NATIVE_IR_FREEZE_CLOCKS=${FREEZE_CLOCKS:-1} \
    NATIVE_IR_INCLUSIVE="sidekey::credential::sigv4::SigV4::apply" \
    RUST_LOG=warn gdb -q -batch -x bench/native_ir.py --args "$SIDEKEY_BIN" run --config "$WORK/sidekey.toml" \
    >/dev/null 2> >(grep -v -e '^warning: Missing auto-load' -e '^of file ' -e "^Use \`info auto-load" \
        -e '^\[Thread debugging' -e '^Using host libthread_db' -e '^\[Detaching' -e '^$' >&2)
SK_PID=$(cat "$WORK/sidekey.pid" 2>/dev/null || true)
grep -q '^| route' "$WORK/report.txt" 2>/dev/null || { echo "native_ir: gdb did not finish the count" >&2; exit 1; }
# Detached, sidekey serves the client's last request; then both stop.
wait "$CLIENT_PID" || { echo "native_ir: the client failed" >&2; exit 1; }
CLIENT_PID=""
cat "$WORK/report.txt"
