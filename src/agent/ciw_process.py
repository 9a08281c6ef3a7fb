"""Processes the supervisor runs: kernels (with timeouts, interrupts and restarts) and shell commands,
their output captured through pipes with a byte cap."""
import errno
import json
import os
import resource
import select
import signal
import time

from ciw_common import AGENT_DIR, READ_CHUNK, WORKSPACE, AgentError, limit_error, output_limit_error

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


def _output_error(capture):
    return output_limit_error(capture.cap)


def _process_limit_error(exc):
    return limit_error("ProcessLimitExceeded",
                        "could not start a process: the sandbox's process limit is reached (%s)" % exc.strerror)


class ForkedProcess:
    """A Popen-like handle on a child forked without exec."""

    def __init__(self, pid):
        self.pid = pid
        self.returncode = None

    def _reap(self, flags):
        try:
            pid, status = os.waitpid(self.pid, flags)
        except ChildProcessError:
            self.returncode = self.returncode if self.returncode is not None else -signal.SIGKILL
            return
        if pid:
            self.returncode = os.waitstatus_to_exitcode(status)

    def poll(self):
        if self.returncode is None:
            self._reap(os.WNOHANG)
        return self.returncode

    def wait(self):
        if self.returncode is None:
            self._reap(0)
        return self.returncode

    def kill(self):
        os.kill(self.pid, signal.SIGKILL)


_site_ready = False


def prepare_site():
    """Adds site-packages (dist-packages, .pth files) to sys.path, once. The supervisor runs with -S to start
    fast, and calls this while it waits for its first request, so that forked kernels find it done."""
    global _site_ready
    if not _site_ready:
        import site
        site.main()
        _site_ready = True


def fork_python_kernel(req_r, rep_w, out_w, err_w, env):
    """The Python kernel, forked from this supervisor: no new interpreter to start and no module to import
    twice, so it is ready in milliseconds and shares the supervisor's pages until it writes them. Only the
    kernel's own pipes survive in the child; site is set up here because the supervisor runs without it."""
    def main():
        from ciw_kernel import kernel_main
        kernel_main(req_r, rep_w)
    return _fork_kernel((req_r, rep_w), out_w, err_w, env, main)


def direct_kernel_spawner(channel_fd, max_output):
    """A spawn function for Kernel: the Python kernel on the direct channel `channel_fd` (see
    ciw_kernel.direct_kernel_main); it announces itself on the reply pipe and then serves the channel."""
    def spawn(req_r, rep_w, out_w, err_w, env):
        def main():
            from ciw_kernel import direct_kernel_main
            os.close(req_r)
            direct_kernel_main(channel_fd, rep_w, max_output)
        return _fork_kernel((req_r, rep_w, channel_fd), out_w, err_w, env, main)
    return spawn


def _fork_kernel(keep_fds, out_w, err_w, env, main):
    # Objects that exist now are never collected in the kernel: its garbage collector then leaves their
    # pages alone, and they stay shared with this process instead of being copied.
    import gc
    gc.freeze()
    pid = os.fork()
    if pid:
        return ForkedProcess(pid)
    status = 1
    try:
        os.setsid()
        # The supervisor's child watch is not the kernel's.
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        keep = {0, 1, 2, *keep_fds}
        for name in os.listdir("/proc/self/fd"):
            if int(name) not in keep:
                try:
                    os.close(int(name))
                except OSError:
                    pass
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as in any Python process
        os.environ.clear()
        os.environ.update(env)
        prepare_site()
        main()
        status = 0
    except BaseException:  # noqa: BLE001 - the child must never return into the supervisor's code
        import traceback
        traceback.print_exc()
    finally:
        os._exit(status)


def exec_js_kernel(req_r, rep_w, out_w, err_w, env):
    import subprocess  # here, not at the top: an idle sandbox's supervisor is 1.3 MB smaller without it
    return subprocess.Popen(
        ["node", "--max-old-space-size=512", os.path.join(AGENT_DIR, "ciw_js_kernel.mjs"), str(req_r), str(rep_w)],
        stdin=subprocess.DEVNULL, stdout=out_w, stderr=err_w, cwd=WORKSPACE, env=env,
        start_new_session=True, pass_fds=(req_r, rep_w),
    )


class Kernel:
    """A stateful interpreter process (Python, or JavaScript on Node). Started on first use, or at once when
    warmed; restarted, losing its state, when it dies or ignores an interrupt."""

    def __init__(self, label, spawn, env, cpu_limit_s, start=False):
        self.label = label
        self.spawn = spawn
        self.env = dict(env, CIW_CPU_SECONDS_PER_CALL=str(cpu_limit_s))
        self.proc = None
        if start:
            self.start()

    def start(self):
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            self.proc = self.spawn(req_r, rep_w, out_w, err_w, self.env)
        except BaseException:
            for fd in (req_w, rep_r, out_r, err_r):
                os.close(fd)
            raise
        finally:
            for fd in (req_r, rep_w, out_w, err_w):
                os.close(fd)
        self.req_w, self.rep_r, self.out_r, self.err_r = req_w, rep_r, out_r, err_r
        for fd in (rep_r, out_r, err_r):
            _set_nonblocking(fd)
        self.rep_buf = b""
        said = Capture(8192)
        line = self._wait_reply(time.monotonic() + 60, said)
        if line is None or not line.startswith(b'{"ready"'):
            self.stop()
            _, err, _ = said.texts()
            last = err.strip().splitlines()[-1:] or ["no output"]
            if "can't start new thread" in err or "Resource temporarily unavailable" in err:
                raise OSError(errno.EAGAIN, "%s could not start a thread or process: %s" % (self.label, last[0]))
            raise RuntimeError("the %s process failed to start (%s)" % (self.label, last[0]))

    def adopt(self, pid):
        """Takes over a running kernel of this process (the supervisor came back from ciw-idle): it can be
        interrupted, stopped and waited for; its start-up pipes are gone, and it needs none of them."""
        self.proc = ForkedProcess(pid)
        self.req_w = self.rep_r = self.out_r = self.err_r = None

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
                if fd is not None:
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

    def execute(self, code, timeout_s, grace_s, capture, inline_images=False):
        ended = self.proc.poll() if self.proc is not None else None
        if ended is not None:
            # It ended between calls (process.exit() in a timer, a crash): this call runs in a new one.
            self.stop()
            how = "signal %d" % -ended if ended < 0 else "code %d" % ended
            res = self.execute(code, timeout_s, grace_s, capture, inline_images)
            res["state_preserved"] = False
            res["notice"] = "the %s process ended between calls (%s); its state (variables, imports) is lost" % (self.label, how)
            return res
        try:
            self.ensure_started()
        except OSError as exc:
            return {"results": [], "error": _process_limit_error(exc), "timed_out": False, "state_preserved": False}
        except RuntimeError as exc:
            return {"results": [], "error": limit_error("KernelDied", str(exc)), "timed_out": False,
                    "state_preserved": False}
        started = time.monotonic()
        request = {"code": code, "inline_images": bool(inline_images)}
        os.write(self.req_w, json.dumps(request).encode("utf-8", "surrogatepass") + b"\n")
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
                error = limit_error("ExecutionTimeout", "execution exceeded the %g s timeout and was interrupted; "
                                    "the %s state is preserved" % (timeout_s, self.label))
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
            self.proc = None  # tried again on the next call
        lost = "the %s process was restarted and its state (variables, imports) is lost" % self.label
        if timed_out:
            error = limit_error("ExecutionTimeout", "execution exceeded the %g s timeout and did not stop when "
                                 "interrupted; %s" % (timeout_s, lost))
        elif stopped == "output":
            error = _output_error(capture)
            error["value"] += "; it did not stop when interrupted, so " + lost
        else:
            error = limit_error("KernelDied", "the %s process exited (%s) while running this code; %s" % (self.label,
                "signal %d" % -exit_code if exit_code is not None and exit_code < 0 else "code %s" % exit_code, lost))
        return {"results": [], "error": error, "timed_out": timed_out, "state_preserved": False}


def _disk_full():
    try:
        st = os.statvfs(WORKSPACE)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 64 * 1024


def run_shell(command, timeout_s, cwd, env, capture, cpu_limit_s):
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
        return {"exit_code": 126, "timed_out": False, "error": _process_limit_error(exc)}
    if cpu_limit_s:
        seconds = int(cpu_limit_s) + 1
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)  # the sandbox's budget: a hard limit cannot go up
        if hard != resource.RLIM_INFINITY:
            seconds = min(seconds, hard)
        try:
            resource.prlimit(proc.pid, resource.RLIMIT_CPU, (seconds, min(seconds + 2, hard) if hard != resource.RLIM_INFINITY else seconds + 2))
        except (OSError, ValueError):
            pass  # already gone
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
        error = limit_error("ExecutionTimeout", "the command exceeded the %g s timeout and its processes "
                             "were killed" % timeout_s)
    elif stopped == "output":
        error = _output_error(capture)
    elif exit_code == -signal.SIGXCPU:
        error = limit_error("CpuTimeLimitExceeded", "a process used up the %g s CPU-time limit" % cpu_limit_s)
    elif exit_code != 0 and _disk_full():
        error = limit_error("DiskQuotaExceeded", "the sandbox's disk space is used up")
    if exit_code < 0:
        exit_code = 128 - exit_code
    if error is None and exit_code != 0:
        error = limit_error("CommandFailed", "exit code %d" % exit_code)
    return {"exit_code": exit_code, "timed_out": stopped == "timeout", "error": error}

