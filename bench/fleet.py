#!/usr/bin/env python3
"""Fleet scenario for [proxy.shared_cache]: counts, not wall time.

Starts, all on 127.0.0.1 and all stopped on exit (by their own PIDs):
  - one redis-server (no persistence) on a free port;
  - one stand-in (this script, a thread): a token endpoint,
    `POST /token` -> {"access_token", "expires_in": LIFETIME}, that counts
    every fetch, and an API that answers 200 only to `Authorization: Bearer
    <a token it issued, not expired>` (401 otherwise);
  - REPLICAS sidekey processes (default 4) with the same config: one cached
    `endpoint` route to the stand-in, shared through the Redis.

Then it sends requests, spread over the replicas, for DURATION seconds (a
few token lifetimes) and reports:
  - token fetches per refresh period (the fleet should fetch once per period,
    where period = LIFETIME - REFRESH_BEFORE; REPLICAS times that without
    sharing);
  - Redis commands per proxied request, from `INFO commandstats` (every
    `cmdstat_*` call, INFO itself excluded; target <= 0.01);
  - requests that did not get 200 (must be 0).
It exits 1 when a target is missed.

Usage: bench/fleet.py  (knobs: SIDEKEY_BIN, REPLICAS, LIFETIME, REFRESH_BEFORE,
DURATION, CLIENTS_PER_REPLICA). Builds nothing: SIDEKEY_BIN defaults to
target/release/sidekey, else target/debug/sidekey (counts do not depend on
the build). Needs python3 and redis-server (apt-get install redis-server).
"""

import base64
import http.client
import http.server
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPLICAS = int(os.environ.get("REPLICAS", "4"))
LIFETIME = int(os.environ.get("LIFETIME", "10"))
REFRESH_BEFORE = int(os.environ.get("REFRESH_BEFORE", "2"))
DURATION = float(os.environ.get("DURATION", "30"))
CLIENTS = int(os.environ.get("CLIENTS_PER_REPLICA", "4"))
HOST = "api.fleet.test"


def log(msg):
    print(f"[fleet {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sidekey_bin():
    if os.environ.get("SIDEKEY_BIN"):
        return os.environ["SIDEKEY_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    for profile in ("release", "debug"):
        path = os.path.join(target, profile, "sidekey")
        if os.access(path, os.X_OK):
            return path
    sys.exit("no sidekey binary: cargo build --release --locked, or set SIDEKEY_BIN")


class StandIn:
    """The token endpoint and the API, with counters."""

    def __init__(self):
        self.lock = threading.Lock()
        self.issued = {}  # token -> expiry (monotonic)
        self.fetches = 0
        self.accepted = 0
        self.rejected = 0

    def issue(self):
        token = secrets.token_hex(20)
        with self.lock:
            self.issued[token] = time.monotonic() + LIFETIME
            self.fetches += 1
        return token

    def check(self, auth):
        token = auth[len("Bearer "):] if auth and auth.startswith("Bearer ") else None
        with self.lock:
            ok = token is not None and self.issued.get(token, 0) > time.monotonic()
            if ok:
                self.accepted += 1
            else:
                self.rejected += 1
        return ok


def serve(stand_in, port):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def reply(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            if self.path != "/token":
                return self.reply(404, {"error": "not_found"})
            self.reply(200, {"access_token": stand_in.issue(), "expires_in": LIFETIME})

        def do_GET(self):
            if stand_in.check(self.headers.get("Authorization")):
                self.reply(200, {"ok": True})
            else:
                self.reply(401, {"error": "invalid_token"})

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def redis_cmd(port, *args):
    """One RESP command; the reply's raw text (enough for INFO and PING)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        out = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
        s.sendall(out.encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            if data.startswith(b"+") or data.startswith(b"-"):
                if data.endswith(b"\r\n"):
                    break
            elif data.startswith(b"$"):
                head, _, rest = data.partition(b"\r\n")
                if len(rest) >= int(head[1:]) + 2:
                    break
        return data.decode(errors="replace")


def redis_commands(port):
    info = redis_cmd(port, "INFO", "commandstats")
    total = 0
    for line in info.splitlines():
        if line.startswith("cmdstat_") and not line.startswith("cmdstat_info:"):
            for field in line.split(":", 1)[1].split(","):
                if field.startswith("calls="):
                    total += int(field[len("calls="):])
    return total


def wait_for(what, check, limit=15.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def drive(port, deadline, counts, lock):
    """Keep-alive GETs to one replica until `deadline`."""
    conn = None
    ok = bad = 0
    while time.monotonic() < deadline:
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/v1/items", headers={"Host": HOST})
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200:
                ok += 1
            else:
                bad += 1
        except (OSError, http.client.HTTPException):
            bad += 1
            conn = None
    with lock:
        counts["ok"] += ok
        counts["bad"] += bad


def main():
    redis = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.access(redis, os.X_OK):
        sys.exit("redis-server is required (apt-get install -y redis-server)")
    binary = sidekey_bin()
    work = tempfile.mkdtemp(prefix="sidekey-fleet-")
    procs = []
    try:
        redis_port = free_port()
        procs.append(subprocess.Popen(
            [redis, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", work],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for("redis", lambda: redis_cmd(redis_port, "PING").startswith("+PONG"))

        stand_in = StandIn()
        stand_port = free_port()
        serve(stand_in, stand_port)
        key = base64.b64encode(secrets.token_bytes(32)).decode()

        ports = []
        for i in range(REPLICAS):
            port, admin = free_port(), free_port()
            config = os.path.join(work, f"replica-{i}.toml")
            with open(config, "w") as f:
                f.write(f"""[proxy]
listen = "127.0.0.1:{port}"
admin = "127.0.0.1:{admin}"
workers = 1
[proxy.shared_cache]
url = "redis://127.0.0.1:{redis_port}/0"
encryption_key = "{key}"

[[route]]
name = "fleet"
host = "{HOST}"
upstream = "http://127.0.0.1:{stand_port}"
[route.auth]
kind = "header"
name = "Authorization"
value = "Bearer {{token}}"
[route.auth.token]
source = "endpoint"
method = "POST"
url = "http://127.0.0.1:{stand_port}/token"
token_pointer = "/access_token"
expires_in_pointer = "/expires_in"
refresh_before = "{REFRESH_BEFORE}s"
""")
            out = open(os.path.join(work, f"replica-{i}.log"), "w")
            procs.append(subprocess.Popen([binary, "run", "--config", config],
                                          stdout=out, stderr=subprocess.STDOUT))
            ports.append(port)
        for port in ports:
            def listening(port=port):
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return True
            wait_for(f"sidekey on {port}", listening)

        log(f"{REPLICAS} replicas, tokens of {LIFETIME}s refreshed {REFRESH_BEFORE}s ahead, "
            f"{DURATION:.0f}s of requests ({CLIENTS} clients per replica), binary {binary}")
        commands_before = redis_commands(redis_port)
        counts, lock = {"ok": 0, "bad": 0}, threading.Lock()
        start = time.monotonic()
        deadline = start + DURATION
        threads = [threading.Thread(target=drive, args=(port, deadline, counts, lock))
                   for port in ports for _ in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=DURATION + 30)
        elapsed = time.monotonic() - start
        commands = redis_commands(redis_port) - commands_before

        requests = counts["ok"] + counts["bad"]
        period = LIFETIME - min(REFRESH_BEFORE, LIFETIME / 2)
        periods = elapsed / period
        # The first fetch happened at start-up, before the run.
        fetches = stand_in.fetches
        expected = 1 + int(elapsed // period)
        per_request = commands / max(requests, 1)
        print(f"requests            {requests} ({counts['bad']} not 200), "
              f"{requests / elapsed:.0f}/s")
        print(f"token fetches       {fetches} over {periods:.1f} refresh periods of {period:.0f}s "
              f"(one per period: {expected}; without sharing about {REPLICAS * expected})")
        print(f"redis commands      {commands} during the run: {per_request:.4f} per proxied request")
        print(f"api rejections      {stand_in.rejected}")
        failed = []
        if counts["bad"] or stand_in.rejected:
            failed.append("every request must get 200")
        if fetches > expected + 1:
            failed.append(f"at most one fetch per refresh period ({fetches} > {expected} + 1)")
        if per_request > 0.01:
            failed.append("at most 0.01 Redis commands per proxied request")
        for f in failed:
            log(f"MISSED: {f}")
        return 1 if failed else 0
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        if not os.environ.get("KEEP"):
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"kept {work}")


if __name__ == "__main__":
    sys.exit(main())
