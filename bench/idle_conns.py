#!/usr/bin/env python3
"""Opens N idle TCP connections to 127.0.0.1:PORT, waits, and prints the
summed VmRSS (KiB) of the given PIDs while they are held, then closes them.

Usage: idle_conns.py PORT N HOLD_SECONDS [--request HOST] PID...
With --request, each connection first sends one GET with that Host and
reads the answer, then idles (a keep-alive connection between requests);
without, it never sends anything.
Prints: "connected=<n> failed=<n> ok=<n answered 200> rss_kib=<sum>".
Loopback only; every connect has a timeout and the whole run is bounded.
"""
import socket
import sys
import time


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def main():
    port, n, hold = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    pids = sys.argv[4:]
    host = None
    if pids[:1] == ["--request"]:
        host, pids = pids[1], pids[2:]
    socks, failed, ok = [], 0, 0
    deadline = time.monotonic() + 60
    for _ in range(n):
        if time.monotonic() > deadline:
            failed += 1
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(5)
        try:
            s.connect(("127.0.0.1", port))
            if host is not None:
                s.sendall(f"GET /v1/items HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                if s.recv(4096).startswith(b"HTTP/1.1 200"):
                    ok += 1
            socks.append(s)
        except OSError:
            failed += 1
            s.close()
    # Let the proxy accept and set up every connection.
    time.sleep(hold)
    rss = rss_kib(pids)
    for s in socks:
        s.close()
    print(f"connected={len(socks)} failed={failed} ok={ok} rss_kib={rss}")


if __name__ == "__main__":
    main()
