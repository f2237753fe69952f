"""The raw socket floor of the CPU workload: ``python burn_socket_server.py [--instance K]``.

The least an RPC server can do around :func:`_cpuwork.burn`: one process, one thread, a
selector over its connections; a request is one byte, the reply is the burn's result as 8
bytes. No framing, no serialization, no dispatch. ``test_cpu.py`` starts ``os.cpu_count()``
of these (``--instance`` only tells them apart) and spreads the 4 clients over them, so the
row shows what any RPC, however small, costs against the raw capacity on this machine.
"""

from __future__ import annotations

import selectors
import socket
import struct

from _common import announce, watch_parent
from _cpuwork import burn

REPLY = struct.Struct("!Q")


def main() -> None:
    watch_parent()
    listener = socket.create_server(("127.0.0.1", 0), backlog=16)
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    announce(f"127.0.0.1:{listener.getsockname()[1]}")
    while True:
        for key, _ in selector.select():
            sock = key.fileobj
            if sock is listener:
                conn, _ = listener.accept()
                conn.setblocking(True)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                selector.register(conn, selectors.EVENT_READ)
                continue
            assert isinstance(sock, socket.socket)
            try:
                if not sock.recv(1):
                    raise ConnectionError("closed")
                sock.sendall(REPLY.pack(burn()))
            except OSError:
                selector.unregister(sock)
                sock.close()


if __name__ == "__main__":
    main()
