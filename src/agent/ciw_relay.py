"""Network relay for sandboxes with network: 127.0.0.1:<port> inside → the service's egress proxy socket."""
import os
import socket
import subprocess
import sys
import threading
import time

from ciw_common import AGENT_DIR, READ_CHUNK

def _pipe(src, dst):
    try:
        while True:
            data = src.recv(READ_CHUNK)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _relay_connection(client, socket_path):
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(socket_path)
    except OSError:
        client.close()
        upstream.close()
        return
    back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
    back.start()
    _pipe(client, upstream)
    back.join()
    client.close()
    upstream.close()


def relay_main(socket_path, port):
    """Turns 127.0.0.1:<port> inside the sandbox into the service's egress proxy socket."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(64)
    while True:
        client, _ = server.accept()
        threading.Thread(target=_relay_connection, args=(client, socket_path), daemon=True).start()


class Relay:
    """The relay process of a sandbox with network; restarted if user code killed it."""

    def __init__(self, socket_path, port):
        self.socket_path = socket_path
        self.port = port
        self.proc = None
        self.ensure()

    def ensure(self):
        if self.proc is not None and self.proc.poll() is None:
            return
        self.proc = subprocess.Popen(
            [sys.executable, "-S", os.path.join(AGENT_DIR, "agent.py"), "--relay", self.socket_path, str(self.port)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.01)

