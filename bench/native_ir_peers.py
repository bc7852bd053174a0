#!/usr/bin/env python3
"""The two stand-ins of bench/native_ir.sh: an upstream and a client.

    native_ir_peers.py upstream PORT_FILE BASIC
        An HTTP/1.1 keep-alive upstream on a free 127.0.0.1 port (written
        to PORT_FILE). It answers `200 ok` (nginx's headers: Server, Date,
        Content-Type, Content-Length, Connection) when `Authorization` is
        exactly BASIC, or has the shape of a SigV4 one (with `X-Amz-Date`
        and `X-Amz-Content-Sha256` beside it); 401 otherwise.

    native_ir_peers.py client PORT COUNT HOST PATH [HOST PATH ...]
        For each HOST PATH: one keep-alive connection to sidekey at PORT,
        COUNT requests on it one after another (curl's request: `Host`,
        `User-Agent: curl/7.88.1`, `Accept: */*`, and `&n=<i>` appended to
        PATH as compare.sh's callgrind client does); exits 1 unless every
        answer is 200. It waits for sidekey to listen (up to 60 s) and
        takes as long as the debugger makes each request take.
"""

import email.utils
import socket
import sys
import threading
import time


def read_head(conn, buf):
    """Reads until the end of a head: (head, rest) or (None, b"") at EOF."""
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            return None, b""
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head, rest


def fields(head):
    out = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        out[name.strip().lower()] = value.strip()
    return out


def upstream(port_file, basic):
    basic = basic.encode()
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    with open(port_file, "w") as f:
        f.write(str(srv.getsockname()[1]))

    def serve(conn):
        buf = b""
        with conn:
            while True:
                head, buf = read_head(conn, buf)
                if head is None:
                    return
                h = fields(head)
                auth = h.get(b"authorization", b"")
                ok = auth == basic or (
                    auth.startswith(b"AWS4-HMAC-SHA256 Credential=")
                    and b", Signature=" in auth
                    and b"x-amz-date" in h
                    and b"x-amz-content-sha256" in h
                )
                body = b"ok\n" if ok else b"no\n"
                status = b"200 OK" if ok else b"401 Unauthorized"
                date = email.utils.formatdate(usegmt=True).encode()
                conn.sendall(
                    b"HTTP/1.1 " + status + b"\r\nServer: nginx/1.22.1\r\nDate: " + date
                    + b"\r\nContent-Type: text/plain\r\nContent-Length: "
                    + str(len(body)).encode() + b"\r\nConnection: keep-alive\r\n\r\n" + body
                )

    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def connect(port):
    deadline = time.time() + 60
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port))
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def client(port, count, pairs):
    for host, path in pairs:
        conn = connect(port)
        buf = b""
        for i in range(count):
            conn.sendall(
                f"GET {path}&n={100001 + i} HTTP/1.1\r\nHost: {host}\r\n"
                "User-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n".encode()
            )
            head, buf = read_head(conn, buf)
            if head is None:
                sys.exit(f"client: {host}: the connection closed at request {i + 1}")
            status = head.split(b" ", 2)[1]
            length = int(fields(head).get(b"content-length", b"0"))
            while len(buf) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    sys.exit(f"client: {host}: the body was cut at request {i + 1}")
                buf += chunk
            buf = buf[length:]
            if status != b"200":
                sys.exit(f"client: {host}{path}: answer {status.decode()} at request {i + 1}")
        conn.close()
        print(f"client: {host}: {count} requests, all 200", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "upstream":
        upstream(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 6 and sys.argv[1] == "client" and len(sys.argv) % 2 == 0:
        args = sys.argv[4:]
        client(int(sys.argv[2]), int(sys.argv[3]), list(zip(args[::2], args[1::2])))
    else:
        sys.exit(__doc__)
