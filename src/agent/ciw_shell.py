"""Shell commands the supervisor runs, each in its own session, and what kernels use as well: the capture of
a child's output through pipes with a byte cap, and killing a whole session."""
import errno
import os
import resource
import select
import signal
import time

from ciw_common import READ_CHUNK, WORKSPACE, AgentError, limit_error, output_limit_error


class Capture:
    """Collects stdout/stderr chunks in arrival order, keeping at most `cap` bytes in total."""

    def __init__(self, cap):
        self.cap = cap
        self.kept = 0
        self.chunks = []  # (stream, bytes)
        self.truncated = False
        self.on_chunk = None  # streaming: called with (stream, bytes) for what is kept

    def add(self, stream, data):
        room = self.cap - self.kept
        if len(data) > room:
            self.truncated = True
            data = data[:max(room, 0)]
        if data:
            self.kept += len(data)
            self.chunks.append((stream, data))
            if self.on_chunk is not None:
                self.on_chunk(stream, data)

    def texts(self):
        out = b"".join(d for s, d in self.chunks if s == 1)
        err = b"".join(d for s, d in self.chunks if s == 2)
        both = b"".join(d for _, d in self.chunks)
        dec = lambda b: b.decode("utf-8", "replace")  # noqa: E731
        return dec(out), dec(err), dec(both)


def set_nonblocking(fd):
    os.set_blocking(fd, False)


def drain(fd, capture, stream):
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


def kill_session(sid, repeat=True):
    """SIGKILL every process of session `sid` (this pid namespace only), so a whole tree dies. Repeats
    until none is left, because a fork bomb makes new members while the old ones are being killed (once
    only with repeat=False: what was found is killed, and not waited for)."""
    me = os.getpid()
    for _ in range(100 if repeat else 1):
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


def output_error(capture):
    return output_limit_error(capture.cap)


def process_limit_error(exc):
    return limit_error("ProcessLimitExceeded",
                        "could not start a process: the sandbox's process limit is reached (%s)" % exc.strerror)


def _disk_full():
    try:
        st = os.statvfs(WORKSPACE)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 64 * 1024


def limit_cpu(pid, cpu_limit_s):
    """Gives process `pid` the per-call CPU-time limit (within the sandbox's own hard limit)."""
    if not cpu_limit_s:
        return
    seconds = int(cpu_limit_s) + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)  # the sandbox's budget: a hard limit cannot go up
    if hard != resource.RLIM_INFINITY:
        seconds = min(seconds, hard)
    try:
        resource.prlimit(pid, resource.RLIMIT_CPU, (seconds, min(seconds + 2, hard) if hard != resource.RLIM_INFINITY else seconds + 2))
    except (OSError, ValueError):
        pass  # already gone


def run_shell(command, timeout_s, cwd, env, capture, cpu_limit_s):
    """Runs a command line; its result carries what it used (its children's CPU time and peak memory)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = _run_shell(command, timeout_s, cwd, env, capture, cpu_limit_s)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    res["usage"] = {"cpu_ms": round(cpu * 1000), "memory_bytes": None, "memory_peak_bytes": after.ru_maxrss * 1024}
    return res


def _run_shell(command, timeout_s, cwd, env, capture, cpu_limit_s):
    import subprocess  # see exec_js_kernel
    try:
        # No preexec_fn: it would force a full fork() of this process instead of vfork().
        proc = subprocess.Popen(
            ["/bin/bash", "-c", command], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, cwd=cwd, env=env, start_new_session=True,
        )
    except (FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        raise AgentError("BAD_CWD", "cannot run in working directory %r: %s" % (cwd, exc.strerror))
    except BlockingIOError as exc:
        return {"exit_code": 126, "timed_out": False, "error": process_limit_error(exc)}
    limit_cpu(proc.pid, cpu_limit_s)
    fds = {proc.stdout.fileno(): 1, proc.stderr.fileno(): 2}
    for fd in fds:
        set_nonblocking(fd)
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
            if not drain(fd, capture, fds[fd]):
                del fds[fd]
    if stopped:
        kill_session(proc.pid)
    exit_code = proc.wait()
    for fd in list(fds):
        drain(fd, capture, fds[fd])
    proc.stdout.close()
    proc.stderr.close()
    error = None
    if stopped == "timeout":
        exit_code = 124
        error = limit_error("ExecutionTimeout", "the command exceeded the %g s timeout and its processes "
                             "were killed" % timeout_s)
    elif stopped == "output":
        error = output_error(capture)
    elif exit_code == -signal.SIGXCPU:
        error = limit_error("CpuTimeLimitExceeded", "a process used up the %g s CPU-time limit" % cpu_limit_s)
    elif exit_code != 0 and _disk_full():
        error = limit_error("DiskQuotaExceeded", "the sandbox's disk space is used up")
    if exit_code < 0:
        exit_code = 128 - exit_code
    if error is None and exit_code != 0:
        error = limit_error("CommandFailed", "exit code %d" % exit_code)
    return {"exit_code": exit_code, "timed_out": stopped == "timeout", "error": error}

