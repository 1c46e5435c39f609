#!/usr/bin/env python3
"""An agent of the first wire format, which takes one request per
connection and does not offer "reuse" in its greeting: what a newer
client must still work with (it connects for each file).  It answers every
request with the same few bytes of output and rc 0.

    old_agent.py SOCKET READY_FILE [drop]

With "drop" it offers "reuse" and still closes each connection after one
request, as an agent does whose idle timeout ends a kept connection, or
that was restarted, between two files: a client that kept the connection
must send the next file again on a new one.
"""
import os
import socket
import struct
import sys


def strings(*items):
    return b"".join(struct.pack(">I", len(s)) + s for s in items)


def frame(kind, payload=b""):
    return kind + struct.pack(">I", len(payload)) + payload


def read_exact(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def serve(conn, drop):
    hello = [b"1", os.environ.get("P11SMIME_MODULE", "").encode()] + ([b"reuse"] if drop else [])
    conn.sendall(frame(b"H", strings(*hello)))
    while True:
        kind, length = struct.unpack(">cI", read_exact(conn, 5))
        read_exact(conn, length)
        if kind == b"E":
            break
    conn.sendall(frame(b"D", b"from the older agent\n") + frame(b"R", strings(b"rc", b"0")))


def main():
    path, ready = sys.argv[1], sys.argv[2]
    drop = len(sys.argv) > 3 and sys.argv[3] == "drop"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(8)
    open(ready, "w").close()
    while True:
        conn, _ = srv.accept()
        try:
            serve(conn, drop)
        except (EOFError, OSError):
            pass
        finally:
            conn.close()


if __name__ == "__main__":
    main()
