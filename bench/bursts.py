#!/usr/bin/env python3
"""Memory after bursts of keep-alive clients (issue 18, item 5).

Starts a stand-in upstream in this process, writes a config for one Basic
route to it, starts sidekey ($SIDEKEY_BIN, default target/release/sidekey)
and runs BURSTS bursts: CLIENTS connections open at once, each sends one
keep-alive request and reads its 200 (the upstream checks the credential),
all stay open for a moment, then all close. After each burst has settled
it prints sidekey's VmRSS and how many upstream connections sidekey still
holds, so that held state (connections, buffers) can be told from memory
the allocator keeps.

Usage: bench/bursts.py [CLIENTS=2000] [BURSTS=5] [WORKERS=2] [EXTRA]
EXTRA: more [proxy] lines, e.g. 'pool_max_idle_per_host = 256'.
The environment is passed to sidekey (e.g. MALLOC_ARENA_MAX=1 to see what
glibc's per-thread arenas keep). With MALLOC_STATS=1 (needs gdb and
ptrace rights) each line also gives glibc's own count, read with
malloc_stats() in the process: the bytes sidekey holds (in use) and the
bytes the allocator took from the system; then malloc_trim(0) is called
and the RSS after it printed, which tells memory sidekey holds from
memory glibc keeps for reuse. Loopback only; every wait is bounded.
"""
import asyncio
import base64
import os
import resource
import subprocess
import sys
import tempfile
import time

USER, PASSWORD = "bench", "bursts-secret"
AUTH = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
SETTLE_S = 3.0


def gdb_call(pid, expr):
    subprocess.run(
        ["gdb", "-p", str(pid), "-batch", "-ex", f"call {expr}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=60,
    )


def malloc_report(pid, log):
    """glibc's totals (in use, from the system) in MiB, then the RSS once
    malloc_trim(0) has returned what it can."""
    start = os.path.getsize(log)
    gdb_call(pid, "(void)malloc_stats()")
    with open(log) as f:
        f.seek(start)
        text = f.read()
    in_use = system = 0
    for line in text.splitlines():
        if line.startswith("system bytes"):
            system = int(line.split("=")[1])
        elif line.startswith("in use bytes"):
            in_use = int(line.split("=")[1])
    gdb_call(pid, "(int)malloc_trim(0)")
    return (
        f" malloc_in_use_mib={in_use / 2**20:.1f} malloc_system_mib={system / 2**20:.1f}"
        f" rss_mib_after_trim={rss_kib(pid) / 1024:.1f}"
    )


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Upstream:
    """Answers 200 to requests that carry the credential, 401 otherwise;
    counts the connections open."""

    def __init__(self):
        self.open = 0
        self.refused = 0

    async def serve(self, reader, writer):
        self.open += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                ok = f"authorization: {AUTH}".lower().encode() in head.lower()
                self.refused += 0 if ok else 1
                status = b"200 OK" if ok else b"401 Unauthorized"
                writer.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()


async def client(port, hold, results):
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), 10
        )
    except (OSError, asyncio.TimeoutError):
        results["failed"] += 1
        return
    try:
        writer.write(b"GET /burst HTTP/1.1\r\nHost: burst.bench.test\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        await asyncio.wait_for(reader.readexactly(2), 30)
        results["ok" if head.startswith(b"HTTP/1.1 200") else "failed"] += 1
        await hold.wait()
    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
        results["failed"] += 1
    finally:
        writer.close()


async def wait_listening(port, proc):
    for _ in range(100):
        if proc.poll() is not None:
            sys.exit(f"sidekey exited with {proc.returncode}")
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    sys.exit("sidekey did not listen")


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def main():
    clients = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    bursts = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    extra = sys.argv[4] if len(sys.argv) > 4 else ""
    binary = os.environ.get("SIDEKEY_BIN", "target/release/sidekey")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 4 * clients + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    upstream = Upstream()
    server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0, backlog=4096)
    up_port = server.sockets[0].getsockname()[1]
    port = free_port()
    work = tempfile.mkdtemp(prefix="sidekey-bursts.")
    config = os.path.join(work, "sidekey.toml")
    with open(config, "w") as f:
        f.write(
            f"""[proxy]
listen = "127.0.0.1:{port}"
workers = {workers}
header_read_timeout = "120s"
{extra}

[[route]]
name = "burst"
host = "burst.bench.test"
upstream = "http://127.0.0.1:{up_port}"
[route.auth]
kind = "basic"
username = "{USER}"
password = "{PASSWORD}"
"""
        )
    log = os.path.join(work, "sidekey.log")
    proc = subprocess.Popen(
        [binary, "run", "--config", config],
        stdout=subprocess.DEVNULL,
        stderr=open(log, "w"),
        env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
    )
    try:
        await wait_listening(port, proc)
        print(f"clients={clients} workers={workers} extra={extra!r}")
        print(f"start: rss_mib={rss_kib(proc.pid) / 1024:.1f}")
        for burst in range(1, bursts + 1):
            results = {"ok": 0, "failed": 0}
            hold = asyncio.Event()
            tasks = [asyncio.create_task(client(port, hold, results)) for _ in range(clients)]
            deadline = time.monotonic() + 60
            while results["ok"] + results["failed"] < clients and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            held = rss_kib(proc.pid)
            hold.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
            await asyncio.sleep(SETTLE_S)
            after = rss_kib(proc.pid)
            stats = ""
            if os.environ.get("MALLOC_STATS") == "1":
                # gdb stops the process: the upstream server must keep
                # running meanwhile, so the call runs in a thread.
                stats = await asyncio.to_thread(malloc_report, proc.pid, log)
            print(
                f"burst {burst}: ok={results['ok']} failed={results['failed']} "
                f"rss_mib_during={held / 1024:.1f} rss_mib_after={after / 1024:.1f} "
                f"upstream_conns_open={upstream.open} refused={upstream.refused}{stats}",
                flush=True,
            )
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        # sidekey's upstream connections end with it.
        for _ in range(100):
            if upstream.open == 0:
                break
            await asyncio.sleep(0.05)
        server.close()


if __name__ == "__main__":
    asyncio.run(main())
