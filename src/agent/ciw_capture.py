"""Output capture inside the Python kernel, for the direct channel (local backend).

On the direct channel the service talks to the kernel itself, so the kernel collects its own output:
- sys.stdout / sys.stderr are sinks that append text to the call's capture: no pipe, no other process;
- fds 1 and 2 are pipes of this process, for output that does not go through sys.stdout (child processes,
  C extensions, os.write); they are drained before each sink write, so the order of the two is kept, and
  a pump thread drains them while the kernel waits (a child writing megabytes must not block on a full
  pipe);
- output reaches the service as event frames on the channel: per line when the call streams, otherwise
  only for calls that run long (every FLUSH_INTERVAL_S) — so a call that hangs and has to be killed has
  still delivered what it printed — and the rest in the reply;
- MAX_OUTPUT_BYTES is enforced here: past it, a write raises OutputLimitExceeded in the user's code, and
  output from fds is dropped and announced with an "output_limit" event, on which the service interrupts
  the call (and kills the kernel if that does not stop it).
"""
import codecs
import json
import os
import select
import threading
import time

FLUSH_INTERVAL_S = 0.2
_ENCODER = json.JSONEncoder(ensure_ascii=False)  # one for all frames: json.dumps with options makes one per call
NAMES = {1: "stdout", 2: "stderr"}


class OutputLimitExceeded(BaseException):
    """Raised in user code by a write past the output cap (a BaseException, as KeyboardInterrupt is)."""


def _utf8_len(text):
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


class KernelCapture:
    def __init__(self, channel_fd, cap):
        self.fd = channel_fd
        self.cap = cap
        # Not re-entrant on purpose: the SIGINT handler skips its flush when the main thread is inside a
        # write (it runs between two bytecodes of it).
        self.lock = threading.Lock()
        self.chunks = []  # (stream, text) not yet sent to the service
        self.kept = 0
        self.truncated = False
        self.active = False
        self.call_id = None
        self.stream = False
        self.last_flush = 0.0
        self.limit_announced = False
        self.in_user_code = lambda: False
        self.decoders = {}
        self.pipes = {}
        ends = {}
        for stream in (1, 2):
            r, w = os.pipe()  # not inheritable: children get fds 1/2, not these ends
            os.set_blocking(r, False)
            self.pipes[r] = stream
            ends[stream] = w
            self.decoders[stream] = codecs.getincrementaldecoder("utf-8")("replace")
        self.closed_pipes = set()
        # The thread first (at the process limit it cannot start): until fds 1/2 are moved, the reason still
        # reaches the supervisor.
        self._start_pump()
        for stream, w in ends.items():
            os.dup2(w, stream)  # dup2 makes fds 1/2 inheritable, as they must be
            os.close(w)

    def restart(self):
        """In a checkpoint fork that became the kernel (a rollback): the pump thread did not survive fork();
        a new one starts, and nothing of the call that was in flight in the fork's parent is kept."""
        # The pump may have held the lock when the fork was made (it is not held around fork(): a before-fork
        # handler of user code that prints would wait for it forever), and was inside poll(), whose object
        # still says it is in use.
        self.lock = threading.Lock()
        self.chunks = []
        self.kept = 0
        self.truncated = False
        self.active = False
        self.limit_announced = False
        self._start_pump()

    def _start_pump(self):
        """New poll objects on the pipes, and the thread that drains them."""
        self.poller = select.poll()
        self.drain_poller = select.poll()
        for r in self.pipes:
            self.poller.register(r, select.POLLIN)
            self.drain_poller.register(r, select.POLLIN)
        threading.Thread(target=self._pump, name="ciw-output", daemon=True).start()

    # -- per call --------------------------------------------------------------------------------------

    def begin(self, call_id, stream):
        with self.lock:
            if self.truncated:
                # Background processes filled the cap between calls: their output must not stop this call.
                self.chunks = [(2, "[output of background processes between calls passed %d bytes and was "
                                   "dropped]\n" % self.cap)]
                self.kept = len(self.chunks[0][1])
                self.truncated = False
            self.call_id = call_id
            self.stream = stream
            self.limit_announced = False
            self.last_flush = time.monotonic()
            self.active = True

    def end(self):
        """The unsent rest of the call's output: (stdout, stderr, output, truncated)."""
        with self.lock:
            self._drain()
            chunks, self.chunks = self.chunks, []
            truncated = self.truncated
            self.kept = 0
            self.truncated = False
            self.active = False
        out = "".join(t for s, t in chunks if s == 1)
        err = "".join(t for s, t in chunks if s == 2)
        both = out if not err else err if not out else "".join(t for _, t in chunks)
        return out, err, both, truncated

    def send(self, frame):
        with self.lock:
            self._send(frame)

    # -- writes ----------------------------------------------------------------------------------------

    def write(self, stream, text):
        with self.lock:
            # Output of child processes that came before this write goes first. A lone newline is print()'s
            # end, right after the text it ends: nothing of this thread's can come between the two.
            if text != "\n":
                self._drain()
            self._add(stream, text)
            if self.active and self.stream and "\n" in text:
                self._flush()
            elif not self.stream and self.active and time.monotonic() - self.last_flush > FLUSH_INTERVAL_S:
                self._flush()
            over = self.truncated and self.active
        if over and self.in_user_code():
            raise OutputLimitExceeded("the output passed the %d-byte limit" % self.cap)

    def flush(self):
        # Only a streamed call sends on flush; otherwise end() collects everything anyway.
        if self.stream and self.active:
            with self.lock:
                self._drain()
                self._flush()

    def flush_for_interrupt(self):
        """From the SIGINT handler: hand what was printed so far to the service, in case this kernel does
        not survive the interrupt. Skipped if another thread is in the middle of a write."""
        if self.lock.acquire(blocking=False):
            try:
                if self.active:
                    self._drain()
                    self._flush()
            finally:
                self.lock.release()

    # -- internals (lock held) -------------------------------------------------------------------------

    def _add(self, stream, text):
        if not text:
            return
        size = _utf8_len(text)
        room = self.cap - self.kept
        if size > room:
            self.truncated = True
            if room <= 0:
                return
            text = text.encode("utf-8", "surrogatepass")[:room].decode("utf-8", "ignore")
            size = room
        self.kept += size
        self.chunks.append((stream, text))

    def _drain(self):
        # One poll for both pipes (a write usually finds them empty): half the system calls of reading each.
        if not self.pipes or not self.drain_poller.poll(0):
            return
        for fd, stream in self.pipes.items():
            while True:
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    break
                except InterruptedError:
                    continue
                if not data:
                    self.closed_pipes.add(fd)  # the user closed fd 1 or 2: stop watching it
                    break
                self._add(stream, self.decoders[stream].decode(data))

    def _send(self, frame):
        """Writes one frame; a leading newline ends whatever partial line a killed predecessor left."""
        data = b"\n" + _ENCODER.encode(frame).encode("utf-8", "backslashreplace") + b"\n"
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def _flush(self):
        """Sends the output collected so far as events of the call in flight (only while there is one)."""
        if not self.active:
            return
        chunks, self.chunks = self.chunks, []
        self.last_flush = time.monotonic()
        for stream, text in _merge(chunks):
            self._send({"id": self.call_id, "event": NAMES[stream], "data": text})

    def _pump(self):
        while True:
            try:
                self.poller.poll()
            except InterruptedError:
                continue
            with self.lock:
                self._drain()
                for fd in self.closed_pipes:
                    self.poller.unregister(fd)
                    self.drain_poller.unregister(fd)
                    del self.pipes[fd]
                    os.close(fd)
                self.closed_pipes.clear()
                if self.active and (self.stream or time.monotonic() - self.last_flush > FLUSH_INTERVAL_S):
                    self._flush()
                announce = self.active and self.truncated and not self.limit_announced
                if announce:
                    self.limit_announced = True
                    self._send({"id": self.call_id, "event": "output_limit"})
            if not self.active:
                # Between calls, output of background processes is kept (up to the cap) for the next call;
                # do not spin on a pipe that is being flooded.
                time.sleep(0.01)


def _merge(chunks):
    """Adjacent chunks of the same stream as one."""
    merged = []
    for stream, text in chunks:
        if merged and merged[-1][0] == stream:
            merged[-1] = (stream, merged[-1][1] + text)
        else:
            merged.append((stream, text))
    return merged


class TextSink:
    """sys.stdout / sys.stderr of the kernel on the direct channel."""

    encoding = "utf-8"
    errors = "backslashreplace"
    newlines = None
    line_buffering = True
    closed = False

    def __init__(self, capture, stream):
        self._capture = capture
        self._stream = stream
        self.buffer = _BinarySink(self)

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError("write() argument must be str, not %s" % type(text).__name__)
        self._capture.write(self._stream, text)
        return len(text)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        self._capture.flush()

    def fileno(self):
        return self._stream

    def isatty(self):
        return False

    def readable(self):
        return False

    def writable(self):
        return True

    def seekable(self):
        return False

    @property
    def name(self):
        return "<%s>" % NAMES[self._stream]

    @property
    def mode(self):
        return "w"

    def close(self):
        pass  # closing the kernel's stdout would only break later calls

    def reconfigure(self, **_options):
        """Libraries call sys.stdout.reconfigure(encoding="utf-8"): it is UTF-8 already."""

    def detach(self):
        import io
        raise io.UnsupportedOperation("the kernel's output stream cannot be detached")


class _BinarySink:
    """sys.stdout.buffer: bytes written there are decoded as UTF-8 into the same capture."""

    def __init__(self, text_sink):
        self._text = text_sink
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def write(self, data):
        self._text.write(self._decoder.decode(bytes(data)))
        return len(data)

    def flush(self):
        self._text.flush()

    def fileno(self):
        return self._text.fileno()

    def isatty(self):
        return False

    def writable(self):
        return True
