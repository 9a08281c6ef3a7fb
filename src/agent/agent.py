"""In-sandbox agent of the Code Interpreter Wrapper (standard library only).

Runs *inside* the isolation boundary. Two roles, chosen by argv:

  agent.py            the supervisor: speaks the wire protocol with the service on stdin/stdout, owns a
                      stateful Python kernel (a child process), runs shell commands, does all file I/O,
                      enforces per-call timeouts and output caps.
  agent.py --kernel   the kernel: keeps the Python namespace between calls; reads requests on an inherited fd and
                      answers on a second inherited fd, while user code's stdout/stderr (fd 1/2) go to pipes the supervisor
                      captures, so output of child processes (os.system) is captured too.

Wire protocol (service <-> supervisor): a frame is one JSON line, followed by exactly `blob` raw bytes
when the header carries a positive "blob" field. Requests carry "id" and "op"; every reply repeats "id"
and has "ok". The supervisor handles one request at a time.
"""
import ast
import base64
import errno
import json
import linecache
import os
import resource
import select
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import traceback

WORKSPACE = os.environ.get("CIW_WORKSPACE", "/workspace")
AGENT_FILE = os.path.abspath(__file__)
READ_CHUNK = 65536


# --------------------------------------------------------------------------------------------- kernel

class CpuTimeLimitExceeded(BaseException):
    """Raised in user code when the call used up its CPU-time budget (a BaseException, like
    KeyboardInterrupt, so that `except Exception` in user code does not swallow it)."""


class _Interrupts:
    """SIGINT / SIGXCPU raise only while user code runs, never inside the protocol loop."""

    in_user_code = False

    @classmethod
    def handler(cls, _signum, _frame):
        if cls.in_user_code:
            raise KeyboardInterrupt

    @classmethod
    def cpu_handler(cls, _signum, _frame):
        if cls.in_user_code:
            raise CpuTimeLimitExceeded("the call used up its CPU-time limit")


def _cpu_used():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _limit_cpu(seconds):
    """Soft RLIMIT_CPU at what this process has used so far plus `seconds` (None lifts it)."""
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = hard if seconds is None else int(_cpu_used() + seconds) + 1
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    try:
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    except (ValueError, OSError):
        pass


def _error_of(exc):
    """The user-visible error of an exception, naming the sandbox limit when one was hit."""
    name, value = type(exc).__name__, str(exc)
    if isinstance(exc, MemoryError):
        name, value = "MemoryLimitExceeded", "out of memory: the sandbox's memory limit was reached (%s)" % (
            value or "MemoryError")
    elif isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        name, value = "DiskQuotaExceeded", "the sandbox's disk space is used up: %s" % value
    elif isinstance(exc, CpuTimeLimitExceeded):
        name = "CpuTimeLimitExceeded"
    return {"name": name, "value": value, "traceback": _user_traceback(exc)}


def _user_traceback(exc):
    """Format `exc` without the agent's own frames, so the user sees only their cells' lines."""
    root = traceback.TracebackException(type(exc), exc, exc.__traceback__)
    te, seen = root, set()
    while te is not None and id(te) not in seen:
        seen.add(id(te))
        frames = [f for f in te.stack if f.filename != AGENT_FILE]
        while frames and frames[0].filename == ast.__file__:
            frames.pop(0)
        te.stack = traceback.StackSummary.from_list(frames)
        te = te.__cause__ or te.__context__
    return "".join(root.format())


def _run_cell(ns, code, cell_no, cpu_limit_s):
    filename = "<cell-%d>" % cell_no
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    results = []
    error = None
    try:
        tree = ast.parse(code, filename, "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        if cpu_limit_s:
            _limit_cpu(cpu_limit_s)
        _Interrupts.in_user_code = True
        try:
            exec(compile(tree, filename, "exec"), ns)
            if last is not None:
                value = eval(compile(last, filename, "eval"), ns)
                if value is not None:
                    ns["_"] = value
                    results.append({"type": "execute_result", "data": {"text/plain": _safe_repr(value)}})
        finally:
            _Interrupts.in_user_code = False
    except BaseException as exc:  # noqa: BLE001 - user code may raise anything, SystemExit included
        _Interrupts.in_user_code = False
        error = _error_of(exc)
    finally:
        if cpu_limit_s:
            _limit_cpu(None)
    return results, error


def _safe_repr(value):
    try:
        return repr(value)
    except BaseException as exc:  # noqa: BLE001 - a broken __repr__ must not kill the kernel
        return "<unrepresentable %s: %s>" % (type(value).__name__, exc)


def kernel_main(request_fd, reply_fd):
    signal.signal(signal.SIGINT, _Interrupts.handler)
    signal.signal(signal.SIGXCPU, _Interrupts.cpu_handler)
    cpu_limit_s = float(os.environ.pop("CIW_CPU_SECONDS_PER_CALL", "0") or 0)
    requests = os.fdopen(request_fd, "rb", buffering=0)
    replies = os.fdopen(reply_fd, "wb", buffering=0)
    # Line-buffered, as on a terminal, so prints and child processes' output keep their order.
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
    sys.stdin = open(os.devnull, "r")
    os.chdir(WORKSPACE)
    if "" not in sys.path:
        sys.path.insert(0, "")
    ns = {"__name__": "__main__", "__builtins__": __builtins__}
    reader = _LineReader(requests)
    replies.write(b'{"ready":true}\n')
    cell_no = 0
    while True:
        try:
            line = reader.readline()
            if not line:
                return
            req = json.loads(line)
            cell_no += 1
            results, error = _run_cell(ns, req["code"], cell_no, cpu_limit_s)
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except BaseException:  # noqa: BLE001 - user may have closed or replaced the stream
                    pass
            reply = json.dumps({"results": results, "error": error}, ensure_ascii=False)
            replies.write(reply.encode("utf-8", "backslashreplace") + b"\n")
        except KeyboardInterrupt:
            continue


class _LineReader:
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


# ----------------------------------------------------------------------------------------- supervisor

class Capture:
    """Collects stdout/stderr chunks in arrival order, keeping at most `cap` bytes in total."""

    def __init__(self, cap):
        self.cap = cap
        self.kept = 0
        self.chunks = []  # (stream, bytes)
        self.truncated = False

    def add(self, stream, data):
        room = self.cap - self.kept
        if len(data) > room:
            self.truncated = True
            data = data[:max(room, 0)]
        if data:
            self.kept += len(data)
            self.chunks.append((stream, data))

    def texts(self):
        out = b"".join(d for s, d in self.chunks if s == 1)
        err = b"".join(d for s, d in self.chunks if s == 2)
        both = b"".join(d for _, d in self.chunks)
        dec = lambda b: b.decode("utf-8", "replace")  # noqa: E731
        return dec(out), dec(err), dec(both)


def _set_nonblocking(fd):
    os.set_blocking(fd, False)


def _drain(fd, capture, stream):
    """Read whatever is available on a non-blocking fd. Returns False at end of file."""
    while True:
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return True
        except OSError as exc:
            if exc.errno == errno.EINTR:
                continue
            return False
        if not data:
            return False
        capture.add(stream, data)


def _kill_session(sid):
    """SIGKILL every process of session `sid` (this pid namespace only), so a whole tree dies. Repeats
    until none is left, because a fork bomb makes new members while the old ones are being killed."""
    me = os.getpid()
    for _ in range(100):
        found = False
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == me:
                continue
            try:
                with open("/proc/%s/stat" % name, "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
                if int(fields[3]) == sid and fields[0] != b"Z":
                    os.kill(int(name), signal.SIGKILL)
                    found = True
            except (OSError, IndexError, ValueError):
                continue
        if not found:
            return


def _limit_error(name, value):
    return {"name": name, "value": value, "traceback": ""}


def _output_error(capture):
    return _limit_error("OutputLimitExceeded",
                        "the output passed the %d-byte limit; the call was stopped and the rest of the output "
                        "dropped" % capture.cap)


def _process_limit_error(exc):
    return _limit_error("ProcessLimitExceeded",
                        "could not start a process: the sandbox's process limit is reached (%s)" % exc.strerror)


class Kernel:
    """The stateful Python process. Restarted, losing its state, when it dies or ignores an interrupt."""

    def __init__(self, env, cpu_limit_s):
        self.env = dict(env, CIW_CPU_SECONDS_PER_CALL=str(cpu_limit_s))
        self.proc = None
        self.start()

    def start(self):
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-u", AGENT_FILE, "--kernel", str(req_r), str(rep_w)],
                stdin=subprocess.DEVNULL, stdout=out_w, stderr=err_w, cwd=WORKSPACE, env=self.env,
                start_new_session=True, pass_fds=(req_r, rep_w),
            )
        finally:
            for fd in (req_r, rep_w, out_w, err_w):
                os.close(fd)
        self.req_w, self.rep_r, self.out_r, self.err_r = req_w, rep_r, out_r, err_r
        for fd in (rep_r, out_r, err_r):
            _set_nonblocking(fd)
        self.rep_buf = b""
        line = self._wait_reply(time.monotonic() + 30, Capture(0))
        if line is None or not line.startswith(b'{"ready"'):
            self.stop()
            raise RuntimeError("python kernel failed to start")

    def ensure_started(self):
        if self.proc is None:
            self.start()

    def stop(self):
        if self.proc is None:
            return
        _kill_session(self.proc.pid)
        try:
            self.proc.kill()
        except OSError:
            pass
        self.proc.wait()
        for fd in (self.req_w, self.rep_r, self.out_r, self.err_r):
            try:
                os.close(fd)
            except OSError:
                pass
        self.proc = None

    def _wait_reply(self, deadline, capture, stop_on_overflow=False):
        """Wait for one reply line until `deadline`, collecting output. Returns the line, None on timeout
        (or, with stop_on_overflow, once the output passed its cap), b"" if the kernel died."""
        while b"\n" not in self.rep_buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (stop_on_overflow and capture.truncated):
                return None
            ready, _, _ = select.select([self.rep_r, self.out_r, self.err_r], [], [], remaining)
            if self.out_r in ready:
                _drain(self.out_r, capture, 1)
            if self.err_r in ready:
                _drain(self.err_r, capture, 2)
            if self.rep_r in ready:
                try:
                    data = os.read(self.rep_r, READ_CHUNK)
                except BlockingIOError:
                    continue
                if not data:
                    return b""
                self.rep_buf += data
        line, _, self.rep_buf = self.rep_buf.partition(b"\n")
        # Output written before the reply is already in the pipes: collect it.
        _drain(self.out_r, capture, 1)
        _drain(self.err_r, capture, 2)
        return line

    def execute(self, code, timeout_s, grace_s, capture):
        try:
            self.ensure_started()
        except OSError as exc:
            return {"results": [], "error": _process_limit_error(exc), "timed_out": False, "state_preserved": False}
        started = time.monotonic()
        os.write(self.req_w, json.dumps({"code": code}).encode("utf-8", "surrogatepass") + b"\n")
        line = self._wait_reply(started + timeout_s, capture, stop_on_overflow=True)
        stopped = None  # why the call was interrupted: "timeout" or "output"
        if line is None:
            stopped = "output" if capture.truncated else "timeout"
            try:
                os.kill(self.proc.pid, signal.SIGINT)
            except OSError:
                pass
            line = self._wait_reply(time.monotonic() + grace_s, capture)
        timed_out = stopped == "timeout"
        if line:
            reply = json.loads(line)
            results, error = reply["results"], reply["error"]
            if timed_out:
                error = _limit_error("ExecutionTimeout", "execution exceeded the %g s timeout and was interrupted; "
                                     "the Python state is preserved" % timeout_s)
                error["traceback"] = (reply["error"] or {}).get("traceback", "")
            elif capture.truncated and (stopped == "output" or error is None):
                error = _output_error(capture)
            return {"results": results, "error": error, "timed_out": timed_out, "state_preserved": True}
        # No reply: the kernel ignored the interrupt or died. Restart it; its state is gone.
        exit_code = self.proc.poll()
        self.stop()
        try:
            self.start()
        except (OSError, RuntimeError):
            pass  # tried again on the next call
        lost = "the Python process was restarted and its state (variables, imports) is lost"
        if timed_out:
            error = _limit_error("ExecutionTimeout", "execution exceeded the %g s timeout and did not stop when "
                                 "interrupted; %s" % (timeout_s, lost))
        elif stopped == "output":
            error = _output_error(capture)
            error["value"] += "; it did not stop when interrupted, so " + lost
        else:
            error = _limit_error("KernelDied", "the Python process exited (%s) while running this code; %s" % (
                "signal %d" % -exit_code if exit_code is not None and exit_code < 0 else "code %s" % exit_code, lost))
        return {"results": [], "error": error, "timed_out": timed_out, "state_preserved": False}


def _disk_full():
    try:
        st = os.statvfs(WORKSPACE)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 64 * 1024


def run_shell(command, timeout_s, cwd, env, capture, cpu_limit_s):
    def limits():
        if cpu_limit_s:
            seconds = int(cpu_limit_s) + 1
            resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 2))

    try:
        proc = subprocess.Popen(
            ["/bin/bash", "-c", command], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, cwd=cwd, env=env, start_new_session=True, preexec_fn=limits,
        )
    except (FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        raise AgentError("BAD_CWD", "cannot run in working directory %r: %s" % (cwd, exc.strerror))
    except BlockingIOError as exc:
        return {"exit_code": 126, "timed_out": False, "error": _process_limit_error(exc)}
    fds = {proc.stdout.fileno(): 1, proc.stderr.fileno(): 2}
    for fd in fds:
        _set_nonblocking(fd)
    deadline = time.monotonic() + timeout_s
    stopped = None
    exited_at = None
    while fds:
        now = time.monotonic()
        if capture.truncated:
            stopped = "output"
            break
        if now >= deadline:
            stopped = "timeout" if proc.poll() is None else None
            break
        # Once bash has exited, give background children a moment, then stop reading their pipes.
        if exited_at is None and proc.poll() is not None:
            exited_at = now
        if exited_at is not None and now - exited_at > 0.05:
            break
        wait = min(deadline - now, 0.05 if exited_at is not None else 0.5)
        ready, _, _ = select.select(list(fds), [], [], wait)
        for fd in ready:
            if not _drain(fd, capture, fds[fd]):
                del fds[fd]
    if stopped:
        _kill_session(proc.pid)
    exit_code = proc.wait()
    for fd in list(fds):
        _drain(fd, capture, fds[fd])
    proc.stdout.close()
    proc.stderr.close()
    error = None
    if stopped == "timeout":
        exit_code = 124
        error = _limit_error("ExecutionTimeout", "the command exceeded the %g s timeout and its processes "
                             "were killed" % timeout_s)
    elif stopped == "output":
        error = _output_error(capture)
    elif exit_code == -signal.SIGXCPU:
        error = _limit_error("CpuTimeLimitExceeded", "a process used up the %g s CPU-time limit" % cpu_limit_s)
    elif exit_code != 0 and _disk_full():
        error = _limit_error("DiskQuotaExceeded", "the sandbox's disk space is used up")
    if exit_code < 0:
        exit_code = 128 - exit_code
    if error is None and exit_code != 0:
        error = _limit_error("CommandFailed", "exit code %d" % exit_code)
    return {"exit_code": exit_code, "timed_out": stopped == "timeout", "error": error}


# ------------------------------------------------------------------------------------------ files

class AgentError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def resolve(path, must_exist=True):
    """Map a user path to a real path inside the workspace; refuse anything that lands outside."""
    if not isinstance(path, str) or path == "" or "\0" in path:
        raise AgentError("BAD_PATH", "path must be a non-empty string without NUL bytes")
    full = os.path.normpath(os.path.join(WORKSPACE, path))
    real = os.path.realpath(full)
    root = os.path.realpath(WORKSPACE)
    if real != root and not real.startswith(root + os.sep):
        raise AgentError("PATH_OUTSIDE_WORKSPACE",
                         "path %r resolves outside the workspace %s" % (path[:200], WORKSPACE))
    if must_exist and not os.path.lexists(real):
        raise AgentError("FILE_NOT_FOUND", "no such file or directory in the sandbox: %s" % full)
    return real


def _os_error(exc, path):
    if exc.errno == errno.ENOSPC or exc.errno == errno.EDQUOT:
        return AgentError("DISK_QUOTA_EXCEEDED", "the sandbox workspace is full while writing %s" % path)
    if exc.errno == errno.EISDIR:
        return AgentError("IS_A_DIRECTORY", "%s is a directory, not a file" % path)
    if exc.errno == errno.ENOENT:
        return AgentError("FILE_NOT_FOUND", "no such file or directory in the sandbox: %s" % path)
    if exc.errno == errno.ENOTDIR:
        return AgentError("NOT_A_DIRECTORY", "a component of %s is not a directory" % path)
    if exc.errno == errno.ENAMETOOLONG:
        return AgentError("BAD_PATH", "the path or one of its names is too long: %s" % path[:200])
    if exc.errno in (errno.ELOOP, errno.EACCES, errno.EPERM):
        return AgentError("PATH_OUTSIDE_WORKSPACE", "%s cannot be accessed (%s)" % (path, exc.strerror))
    return AgentError("FILE_IO_FAILED", "%s: %s" % (path[:500], exc.strerror))


def write_file(path, data, append=False):
    real = resolve(path, must_exist=False)
    if os.path.isdir(real):
        raise AgentError("IS_A_DIRECTORY", "%s is a directory, not a file" % real)
    try:
        os.makedirs(os.path.dirname(real), exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_APPEND if append else os.O_TRUNC)
        fd = os.open(real, flags, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except OSError as exc:
        raise _os_error(exc, real)
    return {"path": real, "size": os.stat(real).st_size}


def read_file(path, max_bytes):
    real = resolve(path)
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if stat.S_ISDIR(st.st_mode):
                raise AgentError("IS_A_DIRECTORY", "%s is a directory, not a file" % real)
            if not stat.S_ISREG(st.st_mode):
                raise AgentError("NOT_A_REGULAR_FILE", "%s is not a regular file" % real)
            if st.st_size > max_bytes:
                raise AgentError("FILE_TOO_LARGE", "%s is %d bytes, more than the %d-byte limit"
                                 % (real, st.st_size, max_bytes))
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise _os_error(exc, real)
    if len(data) > max_bytes:
        raise AgentError("FILE_TOO_LARGE", "%s is larger than the %d-byte limit" % (real, max_bytes))
    return real, data


def _entry(real, name):
    st = os.lstat(real)
    kind = "directory" if stat.S_ISDIR(st.st_mode) else "symlink" if stat.S_ISLNK(st.st_mode) \
        else "file" if stat.S_ISREG(st.st_mode) else "other"
    return {"name": name, "path": real, "type": kind, "size": st.st_size, "modified_ms": int(st.st_mtime * 1000)}


def stat_path(path):
    real = resolve(path)
    return _entry(real, os.path.basename(real))


def list_dir(path, recursive, limit):
    real = resolve(path)
    if not os.path.isdir(real):
        raise AgentError("NOT_A_DIRECTORY", "%s is not a directory" % real)
    entries = []
    truncated = False
    for dirpath, dirnames, filenames in os.walk(real):
        dirnames.sort()
        for name in dirnames + sorted(filenames):
            if len(entries) >= limit:
                truncated = True
                break
            entries.append(_entry(os.path.join(dirpath, name), name))
        if truncated or not recursive:
            break
    return {"path": real, "entries": entries, "truncated": truncated}


# ------------------------------------------------------------------------------------ network relay

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
            [sys.executable, "-S", AGENT_FILE, "--relay", self.socket_path, str(self.port)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.01)


# ----------------------------------------------------------------------------------------- main loop

def _make_undumpable():
    """PR_SET_DUMPABLE 0: code running as the same uid in this sandbox can then neither ptrace the
    supervisor nor open /proc/<pid>/fd/* to write forged frames on the service's pipe."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def supervisor_main():
    _make_undumpable()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    os.makedirs(WORKSPACE, exist_ok=True)
    os.chdir(WORKSPACE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIW_") or k == "CIW_WORKSPACE"}
    max_output = int(os.environ.get("CIW_MAX_OUTPUT_BYTES", "1048576"))
    grace_s = float(os.environ.get("CIW_INTERRUPT_GRACE_MS", "2000")) / 1000
    cpu_limit_s = float(os.environ.get("CIW_CPU_SECONDS_PER_CALL", "0") or 0)
    apply_rlimits(json.loads(os.environ.get("CIW_RLIMITS", "{}")))
    stdin = _LineReader(os.fdopen(0, "rb", buffering=0))
    out = os.fdopen(1, "wb", buffering=0)
    relay = None
    if os.environ.get("CIW_PROXY_SOCKET"):
        relay = Relay(os.environ["CIW_PROXY_SOCKET"], int(os.environ.get("CIW_PROXY_PORT", "3128")))
    kernel = Kernel(env, cpu_limit_s)

    def send(header, blob=b""):
        if blob:
            header["blob"] = len(blob)
        out.write(json.dumps(header, ensure_ascii=False).encode("utf-8", "backslashreplace") + b"\n" + blob)

    send({"ready": True, "pid": os.getpid(), "kernel_pid": kernel.proc.pid})
    while True:
        line = stdin.readline()
        if not line:
            kernel.stop()
            return
        req = json.loads(line)
        blob = stdin.read_exact(req["blob"]) if req.get("blob") else b""
        rid = req.get("id")
        started = time.monotonic()
        if relay is not None and req.get("op") in ("exec", "shell"):
            relay.ensure()
        try:
            reply, reply_blob = handle(req, blob, kernel, env, max_output, grace_s, cpu_limit_s)
            reply.update({"id": rid, "ok": True})
        except AgentError as exc:
            reply, reply_blob = {"id": rid, "ok": False, "code": exc.code, "message": exc.message}, b""
        except Exception as exc:  # noqa: BLE001 - report, never die
            reply, reply_blob = {"id": rid, "ok": False, "code": "AGENT_FAILURE",
                                 "message": "%s: %s" % (type(exc).__name__, exc)}, b""
        reply["duration_ms"] = round((time.monotonic() - started) * 1000, 3)
        send(reply, reply_blob)


def apply_rlimits(limits):
    """Limits every process of the sandbox inherits: no core dumps, and whatever the service asks for
    (address-space data, process count) — the fallback where cgroups are not available."""
    names = {"core": resource.RLIMIT_CORE, "data": resource.RLIMIT_DATA, "nproc": resource.RLIMIT_NPROC}
    for key, value in dict({"core": 0}, **limits).items():
        if key in names and value is not None:
            resource.setrlimit(names[key], (int(value), int(value)))


def handle(req, blob, kernel, env, max_output, grace_s, cpu_limit_s):
    op = req["op"]
    if op == "exec":
        capture = Capture(int(req.get("max_output_bytes") or max_output))
        res = kernel.execute(req["code"], req["timeout_ms"] / 1000, grace_s, capture)
        res["stdout"], res["stderr"], res["output"] = capture.texts()
        res["output_truncated"] = capture.truncated
        return res, b""
    if op == "shell":
        capture = Capture(int(req.get("max_output_bytes") or max_output))
        shell_env = dict(env)
        shell_env.update(req.get("env") or {})
        cwd = req.get("cwd") or WORKSPACE
        cwd = cwd if os.path.isabs(cwd) else os.path.join(WORKSPACE, cwd)
        res = run_shell(req["command"], req["timeout_ms"] / 1000, cwd, shell_env, capture, cpu_limit_s)
        res["stdout"], res["stderr"], res["output"] = capture.texts()
        res["output_truncated"] = capture.truncated
        return res, b""
    if op == "write":
        data = blob if "data_b64" not in req else base64.b64decode(req["data_b64"])
        return write_file(req["path"], data, bool(req.get("append"))), b""
    if op == "read":
        real, data = read_file(req["path"], int(req["max_bytes"]))
        return {"path": real, "size": len(data)}, data
    if op == "stat":
        return stat_path(req["path"]), b""
    if op == "list":
        return list_dir(req.get("path") or ".", bool(req.get("recursive")), int(req.get("limit") or 10000)), b""
    if op == "ping":
        return {"kernel_alive": kernel.proc is not None and kernel.proc.poll() is None}, b""

    raise AgentError("UNKNOWN_OP", "unknown operation %r" % op)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--kernel"]:
        kernel_main(int(sys.argv[2]), int(sys.argv[3]))
    elif sys.argv[1:2] == ["--relay"]:
        relay_main(sys.argv[2], int(sys.argv[3]))
    else:
        supervisor_main()
