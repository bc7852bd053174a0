#!/usr/bin/env python3
"""A one-time token endpoint stand-in for bench/compare.sh.

    python3 bench/mint_server.py PORT [DELAY_MS]

Listens on 127.0.0.1:PORT (HTTP/1.1, keep-alive). Every request except
`GET /count` is a mint: after DELAY_MS (default 20) it answers
`{"token":"<32 random hex>"}`. `GET /count` answers at once with the number
of mints so far, so the script can compare mints with forwarded requests.
nginx cannot delay an answer without extra modules, hence this.
"""

import asyncio
import os
import sys

MINTS = 0


def response(status, body):
    return (
        "HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        % (status, len(body))
    ).encode() + body


async def handle(reader, writer):
    global MINTS
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target = lines[0].split(" ")[:2]
            length = 0
            close = False
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value.strip())
                elif name == "connection" and value.strip().lower() == "close":
                    close = True
            if length:
                await reader.readexactly(length)
            if method == "GET" and target == "/count":
                writer.write(response("200 OK", b'{"mints":%d}' % MINTS))
            else:
                await asyncio.sleep(DELAY)
                MINTS += 1
                writer.write(response("200 OK", b'{"token":"%s"}' % os.urandom(16).hex().encode()))
            await writer.drain()
            if close:
                break
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def main(port):
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    DELAY = (float(sys.argv[2]) if len(sys.argv) > 2 else 20.0) / 1000
    try:
        asyncio.run(main(int(sys.argv[1])))
    except KeyboardInterrupt:
        pass
