#!/usr/bin/env python3
"""Sends one request to each of N distinct host names through sidekey's
CONNECT interception, one new tunnel per host, and prints sidekey's VmRSS
every STEP hosts: the leaf-certificate cache must keep memory bounded by its
size (1,024 leaves), however many hosts a wildcard route lets through.

Usage: leaf_hosts.py PROXY_PORT CA_PEM N STEP DOMAIN PID
Host i is "h<i>.<DOMAIN>"; each request is `GET /v1/items?id=42` and must
get 200. Prints one line per STEP: "hosts=<i> ok=<n> rss_kib=<kib>".
Loopback only; every socket has a timeout.
"""
import socket
import ssl
import sys


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def one(port, ctx, host):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = raw.recv(4096)
            if not chunk:
                return False
            head += chunk
        if not head.startswith(b"HTTP/1.1 200"):
            return False
        with ctx.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(
                f"GET /v1/items?id=42 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
            )
            answer = b""
            while True:
                chunk = tls.recv(65536)
                if not chunk:
                    break
                answer += chunk
            return answer.startswith(b"HTTP/1.1 200")


def main():
    port, ca, n, step, domain, pid = sys.argv[1:7]
    port, n, step, pid = int(port), int(n), int(step), int(pid)
    ctx = ssl.create_default_context(cafile=ca)
    ok = 0
    for i in range(1, n + 1):
        try:
            ok += one(port, ctx, f"h{i}.{domain}")
        except (OSError, ssl.SSLError):
            pass
        if i % step == 0 or i == n:
            print(f"hosts={i} ok={ok} rss_kib={rss_kib(pid)}", flush=True)


if __name__ == "__main__":
    main()
