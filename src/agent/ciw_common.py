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


def output_limit_error(cap):
    return limit_error("OutputLimitExceeded",
                       "the output passed the %d-byte limit; the call was stopped and the rest of the output "
                       "dropped" % cap)


class LineReader:
    """Reads lines from an unbuffered binary file without losing bytes that follow a newline."""

    def __init__(self, f, before_read=None):
        self.f = f
        self.buf = b""
        self.before_read = before_read  # called before each read that may block

    def readline(self):
        while b"\n" not in self.buf:
            if self.before_read is not None:
                self.before_read()
            chunk = self.f.read(READ_CHUNK)
            if not chunk:
                rest, self.buf = self.buf, b""
                return rest
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def payload(self, n):
        """The next n bytes as a Payload, read as they are consumed (a file's content need not fit in memory)."""
        return Payload(self, n)

    def read_exact(self, n):
        """Exactly n bytes (a file's content), read into one buffer: no copying per chunk."""
        if len(self.buf) >= n:
            data, self.buf = self.buf[:n], self.buf[n:]
            return data
        out = bytearray(n)
        have = len(self.buf)
        out[:have] = self.buf
        self.buf = b""
        view = memoryview(out)
        while have < n:
            got = self.f.readinto(view[have:])
            if not got:
                raise EOFError("stream ended inside a binary payload")
            have += got
        return out


def write_all(f, data):
    """Writes all of data to an unbuffered file, however many calls the pipe needs."""
    view = memoryview(data)
    while view:
        written = f.write(view)
        view = view[written:]


class Payload:
    """A binary payload of known length that follows a frame header on a LineReader: its chunks are read
    into one reused buffer as they are consumed. drain() reads what is left, so the next frame is found
    where it starts even when the consumer stopped early (a write that failed half-way)."""

    CHUNK = 1 << 20

    def __init__(self, reader, n):
        self.reader = reader
        self.left = n

    def chunks(self):
        buf = self.reader.buf
        if buf:
            head = bytes(buf[:self.left])
            self.reader.buf = buf[len(head):]
            self.left -= len(head)
            yield head
        chunk = memoryview(bytearray(min(self.left, self.CHUNK)))
        while self.left > 0:
            got = self.reader.f.readinto(chunk[:min(self.left, self.CHUNK)])
            if not got:
                raise EOFError("stream ended inside a binary payload")
            self.left -= got
            yield chunk[:got]

    def drain(self):
        for _ in self.chunks():
            pass


def hung_up_fifo(fd):
    """No process holds the write end of FIFO `fd` (after one did)."""
    import select
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return any(ev & select.POLLHUP for _, ev in poller.poll(0))
