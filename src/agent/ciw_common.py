"""Shared pieces of the in-sandbox agent: paths, the line reader, errors the service understands."""
import os

WORKSPACE = os.environ.get("CIW_WORKSPACE", "/workspace")
AGENT_DIR = os.path.dirname(os.path.abspath(__file__))
READ_CHUNK = 65536


class AgentError(Exception):
    """A failure of the request (bad path, missing file…), reported to the service with a stable code."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def limit_error(name, value):
    """A user-visible error that is not an exception of the user's code (a limit, a timeout…)."""
    return {"name": name, "value": value, "traceback": ""}


class LineReader:
    """Reads lines from an unbuffered binary file without losing bytes that follow a newline."""

    def __init__(self, f):
        self.f = f
        self.buf = b""

    def readline(self):
        while b"\n" not in self.buf:
            chunk = self.f.read(READ_CHUNK)
            if not chunk:
                rest, self.buf = self.buf, b""
                return rest
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def read_exact(self, n):
        while len(self.buf) < n:
            chunk = self.f.read(max(READ_CHUNK, n - len(self.buf)))
            if not chunk:
                raise EOFError("stream ended inside a binary payload")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

