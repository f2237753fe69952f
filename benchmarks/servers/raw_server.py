"""The floor: a plain-socket echo server, ``python raw_server.py``.

Each connection starts with a 4-byte big-endian message size; the server then reads exactly
that many bytes and sends them back, over and over, on a thread per connection.
"""

from __future__ import annotations

import socket
import struct
import threading

from _common import announce, watch_parent


def recv_exactly(sock: socket.socket, view: memoryview) -> bool:
    """Fill ``view`` from ``sock``; False when the peer closed first."""
    got, size = 0, len(view)
    while got < size:
        n = sock.recv_into(view[got:])
        if not n:
            return False
        got += n
    return True


def serve(sock: socket.socket) -> None:
    with sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        header = bytearray(4)
        if not recv_exactly(sock, memoryview(header)):
            return
        (size,) = struct.unpack("!I", header)
        buf = bytearray(size)
        view = memoryview(buf)
        try:
            while recv_exactly(sock, view):
                sock.sendall(view)
        except OSError:
            pass


def main() -> None:
    watch_parent()
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    announce(f"127.0.0.1:{listener.getsockname()[1]}")
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
