"""The S3 server's front door for the test of a server killed while a version is written.

`python -m tests.tcp_proxy PORT TARGET_PORT PATTERN` forwards 127.0.0.1:PORT to 127.0.0.1:TARGET_PORT
(the moto server) byte for byte, until a client sends bytes matching the regular expression
PATTERN (e.g. the request line of a manifest's PUT): then the whole process dies at once (os._exit),
before it forwards them, and every connection drops. To its clients that is a server that died in
the middle of a write, at a chosen point; what reached the store before it stays there, as a real
server's disk keeps it (moto itself keeps its state in memory: killing it would lose the evidence).
"""

from __future__ import annotations

import os
import re
import socket
import sys
import threading


def _pump(source: socket.socket, sink: socket.socket, pattern: re.Pattern | None) -> None:
    tail = b""
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            if pattern is not None:
                if pattern.search(tail + data):
                    os._exit(0)  # the server dies here: nothing of this request goes on
                tail = data[-512:]
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def main(port: int, target: int, pattern: str) -> None:
    compiled = re.compile(pattern.encode())
    listener = socket.create_server(("127.0.0.1", port))
    while True:
        client, _ = listener.accept()
        upstream = socket.create_connection(("127.0.0.1", target))
        threading.Thread(target=_pump, args=(client, upstream, compiled), daemon=True).start()
        threading.Thread(target=_pump, args=(upstream, client, None), daemon=True).start()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
