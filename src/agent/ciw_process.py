"""The kernels the supervisor runs (Python forked, JavaScript exec'd), with timeouts, interrupts and restarts,
their output captured through pipes with a byte cap (ciw_shell.Capture)."""
import errno
import json
import os
import select
import signal
import time

from ciw_common import AGENT_DIR, READ_CHUNK, WORKSPACE, AgentError, limit_error
from ciw_shell import Capture, drain, kill_session, output_error, process_limit_error, set_nonblocking

class ForkedProcess:
    """A Popen-like handle on a child forked without exec."""

    def __init__(self, pid):
        self.pid = pid
        self.returncode = None

    def _reap(self, flags):
        try:
            pid, status = os.waitpid(self.pid, flags)
        except ChildProcessError:
            if self.returncode is None and _running(self.pid):
                return  # a checkpoint made the kernel while its old parent dies: this process's child soon
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


def _running(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return False


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


def direct_kernel_spawner(channel_fd, channel_out_fd, max_output):
    """A spawn function for Kernel: the Python kernel on the direct channel — requests on `channel_fd`,
    replies on `channel_out_fd` (see ciw_kernel.direct_kernel_main); it announces itself on the reply pipe
    and then serves the channel."""
    def spawn(req_r, rep_w, out_w, err_w, env):
        def main():
            from ciw_kernel import direct_kernel_main
            os.close(req_r)
            direct_kernel_main(channel_fd, channel_out_fd, rep_w, max_output)
        return _fork_kernel((req_r, rep_w, channel_fd, channel_out_fd), out_w, err_w, env, main)
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
            set_nonblocking(fd)
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

    def stop(self, wait=True):
        """Kills the kernel and its session. With wait=False what was found is killed and not waited for: the
        old process, to wait for later (a rollback must not wait for a large process's memory to be freed)."""
        if self.proc is None:
            return None
        old = self.proc
        kill_session(old.pid, repeat=wait)
        try:
            old.kill()
        except OSError:
            pass
        if wait:
            old.wait()
        for fd in (self.req_w, self.rep_r, self.out_r, self.err_r):
            try:
                if fd is not None:
                    os.close(fd)
            except OSError:
                pass
        self.proc = None
        return old

    def _wait_reply(self, deadline, capture, stop_on_overflow=False):
        """Wait for one reply line until `deadline`, collecting output. Returns the line, None on timeout
        (or, with stop_on_overflow, once the output passed its cap), b"" if the kernel died."""
        while b"\n" not in self.rep_buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (stop_on_overflow and capture.truncated):
                return None
            ready, _, _ = select.select([self.rep_r, self.out_r, self.err_r], [], [], remaining)
            if self.out_r in ready:
                drain(self.out_r, capture, 1)
            if self.err_r in ready:
                drain(self.err_r, capture, 2)
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
        drain(self.out_r, capture, 1)
        drain(self.err_r, capture, 2)
        return line

    def state(self, action, path, timeout_s=120):
        """Asks the kernel to save its state to `path`, or to load it from there (starting it first): the
        kernel's report. The kernel runs no user code meanwhile; output it makes is dropped."""
        if action == "load":
            self.ensure_started()
        os.write(self.req_w, json.dumps({"state": action, "path": path}).encode("utf-8") + b"\n")
        line = self._wait_reply(time.monotonic() + timeout_s, Capture(1 << 16))
        if not line:
            raise AgentError("STATE_FAILED", "the %s process did not %s its state" % (self.label, action))
        return json.loads(line)["state"]

    def execute(self, code, timeout_s, grace_s, capture, inline_images=False, env=None):
        ended = self.proc.poll() if self.proc is not None else None
        if ended is not None:
            # It ended between calls (process.exit() in a timer, a crash): this call runs in a new one.
            self.stop()
            how = "signal %d" % -ended if ended < 0 else "code %d" % ended
            res = self.execute(code, timeout_s, grace_s, capture, inline_images, env)
            res["state_preserved"] = False
            res["notice"] = "the %s process ended between calls (%s); its state (variables, imports) is lost" % (self.label, how)
            return res
        try:
            self.ensure_started()
        except OSError as exc:
            return {"results": [], "error": process_limit_error(exc), "timed_out": False, "state_preserved": False}
        except RuntimeError as exc:
            return {"results": [], "error": limit_error("KernelDied", str(exc)), "timed_out": False,
                    "state_preserved": False}
        started = time.monotonic()
        request = {"code": code, "inline_images": bool(inline_images)}
        if env:
            request["env"] = env
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
                error = output_error(capture)
            return {"results": results, "error": error, "timed_out": timed_out, "state_preserved": True,
                    "execution_count": reply.get("execution_count"), "usage": reply.get("usage")}
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
            error = output_error(capture)
            error["value"] += "; it did not stop when interrupted, so " + lost
        else:
            error = limit_error("KernelDied", "the %s process exited (%s) while running this code; %s" % (self.label,
                "signal %d" % -exit_code if exit_code is not None and exit_code < 0 else "code %s" % exit_code, lost))
        return {"results": [], "error": error, "timed_out": timed_out, "state_preserved": False}
