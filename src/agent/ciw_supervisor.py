"""The supervisor: speaks the wire protocol with the service on stdin/stdout and dispatches requests."""
import codecs
import json
import os
import select
import signal
import sys
import time

from ciw_common import AGENT_DIR, WORKSPACE, AgentError, hung_up_fifo, write_all
from ciw_files import OpenFile, changed_files, list_dir, open_file, snapshot, stat_path, write_file
from ciw_process import Kernel, direct_kernel_spawner, exec_js_kernel, fork_python_kernel, prepare_site
from ciw_shell import Capture, run_shell
from ciw_rollback import kernel_env
import ciw_contexts
import ciw_ops
import ciw_snapshot


def _on_path(name, path):
    return any(os.access(os.path.join(d, name), os.X_OK) for d in path.split(os.pathsep) if d)


IDLE_PROGRAM = os.path.join(AGENT_DIR, "ciw-idle")


class Supervisor:
    def __init__(self, out, resume=None):
        """`resume`: (kernel pid or 0, kernel starts so far) when this process comes back from ciw-idle."""
        self.out = out
        # What user processes see: this process's environment (the service's defaults, or the pod's), then the
        # variables the sandbox was created with. Those come as JSON (CIW_USER_ENV) so that none of them
        # (LD_PRELOAD, PYTHONHOME…) ever applies to this process.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CIW_")}
        self.env.update((k, v) for k, v in json.loads(os.environ.get("CIW_USER_ENV") or "{}").items() if not k.startswith("CIW_"))
        self.env["CIW_WORKSPACE"] = WORKSPACE
        self.max_output = int(os.environ.get("CIW_MAX_OUTPUT_BYTES", "1048576"))
        self.grace_s = float(os.environ.get("CIW_INTERRUPT_GRACE_MS", "2000")) / 1000
        self.cpu_limit_s = float(os.environ.get("CIW_CPU_SECONDS_PER_CALL", "0") or 0)
        self.relay = None
        if os.environ.get("CIW_PROXY_SOCKET"):
            from ciw_relay import Relay  # only sandboxes with network pay for socket and threading
            self.relay = Relay(os.environ["CIW_PROXY_SOCKET"], int(os.environ.get("CIW_PROXY_PORT", "3128")))
        # Kernels start on first use (an idle sandbox is just this process), or now when the sandbox is
        # warmed for a pool, with modules preloaded.
        preload = os.environ.get("CIW_PRELOAD", "")
        python_env = dict(self.env, CIW_MAX_OUTPUT_BYTES=str(self.max_output))  # its results' cap
        if preload:
            python_env["CIW_PRELOAD"] = preload
        warm = bool(os.environ.get("CIW_WARM")) and resume is None
        # The direct channel (local backend, sandboxes without network): the service talks to the Python kernel
        # itself (requests on CIW_KERNEL_FD, replies on CIW_KERNEL_OUT_FD: two FIFOs that outlive the service, or
        # one socket); this process only starts, interrupts and restarts it, and keeps its checkpoints' forks.
        self.channel_fd = int(os.environ.get("CIW_KERNEL_FD") or 0)
        self.channel_out_fd = int(os.environ.get("CIW_KERNEL_OUT_FD") or 0) or self.channel_fd
        if self.channel_fd and self.relay is not None:
            for fd in {self.channel_fd, self.channel_out_fd}:
                os.close(fd)  # a sandbox with network relays Python through this process
            self.channel_fd = self.channel_out_fd = 0
        self.direct = None
        self.kernel_starts = 1 if warm else 0
        if self.channel_fd:
            for fd in {self.channel_fd, self.channel_out_fd}:
                os.set_inheritable(fd, False)
            self.direct = Kernel("Python", direct_kernel_spawner(self.channel_fd, self.channel_out_fd, self.max_output),
                                 kernel_env(python_env), self.cpu_limit_s, start=warm)
            if resume is not None:
                if resume[0]:
                    self.direct.adopt(resume[0])  # still this pid's child: exec() kept the pid
                self.kernel_starts = resume[1]
        self.idle_s = float(os.environ.get("CIW_IDLE_MS") or 0) / 1000
        # The read end of a FIFO only the service writes to (sandboxes that outlive the service).
        self.lifeline = int(os.environ.get("CIW_LIFELINE_FD") or 0)
        self.orphan_s = float(os.environ.get("CIW_ORPHAN_MS") or 0) / 1000
        self.orphan_since = None
        if self.lifeline:
            os.set_inheritable(self.lifeline, False)
        self.kernels = {
            "python": None if self.direct else Kernel("Python", fork_python_kernel, python_env, self.cpu_limit_s, start=warm),
            "javascript": Kernel("JavaScript", exec_js_kernel, self.env, self.cpu_limit_s),
        }
        self.python_env = python_env
        self.contexts = {}  # context id -> Kernel: more interpreters beside the default ones (see ciw_contexts)
        self.files = snapshot()
        self.wake_r = None
        # Background processes and file watches (ciw_ops.background), the lock their threads send frames under,
        # and what runs once the reply of the request being served is sent.
        self.procs = self.watches = self.send_lock = None
        self.after_reply = []

    def send(self, header, blob=b""):
        """One frame: the header line, then its payload (bytes, or an OpenFile sent from the file); whole,
        under a lock once threads send frames too."""
        if self.send_lock is None:
            return self._send(header, blob)
        with self.send_lock:
            return self._send(header, blob)

    def _send(self, header, blob):
        size = blob.size if isinstance(blob, OpenFile) else len(blob)
        if size:
            header["blob"] = size
        write_all(self.out, json.dumps(header, ensure_ascii=False).encode("utf-8", "backslashreplace") + b"\n")
        if isinstance(blob, OpenFile):
            blob.send_to(self.out.fileno())
        elif blob:
            write_all(self.out, blob)

    def capture(self, req):
        """An output capture for a call; with "stream", each chunk is also sent at once as an event frame."""
        capture = Capture(int(req.get("max_output_bytes") or self.max_output))
        if req.get("stream"):
            decoders = {1: codecs.getincrementaldecoder("utf-8")("replace"), 2: codecs.getincrementaldecoder("utf-8")("replace")}
            names = {1: "stdout", 2: "stderr"}

            def on_chunk(stream, data):
                text = decoders[stream].decode(data)
                if text:
                    self.send({"id": req.get("id"), "event": names[stream], "data": text})
            capture.on_chunk = on_chunk
        return capture

    def finish(self, res, capture):
        """Adds output and the artifacts (files created or changed by the call) to a result."""
        res["stdout"], res["stderr"], res["output"] = capture.texts()
        res["output_truncated"] = capture.truncated
        after = snapshot()
        res["files"], res["files_truncated"] = changed_files(self.files, after)
        self.files = after
        return res

    def _drain_channel(self):
        """Requests a dead kernel left unread must not reach its successor."""
        os.set_blocking(self.channel_fd, False)
        try:
            while os.read(self.channel_fd, 65536):
                pass
        except BlockingIOError:
            pass
        finally:
            os.set_blocking(self.channel_fd, True)

    def kernel_op(self, op):
        """Start, interrupt or restart the Python kernel of the direct channel."""
        if self.direct is None:
            raise AgentError("NO_DIRECT_KERNEL", "this sandbox has no direct kernel channel")
        kernel = self.direct
        if op == "kernel_interrupt":
            if kernel.proc is not None:
                try:
                    os.kill(kernel.proc.pid, signal.SIGINT)
                except OSError:
                    pass
            return {"running": kernel.proc is not None}
        if op == "kernel_restart":
            kernel.stop()
        started = kernel.proc is None
        if started:
            # The service sends the first call right behind the first start; later starts follow a kernel
            # that may have left a request unread, which must not run in its successor.
            if self.kernel_starts:
                self._drain_channel()
            self.kernel_starts += 1
            try:
                kernel.start()
            except OSError as exc:
                raise AgentError("PROCESS_LIMIT", "could not start the Python process: the sandbox's process "
                                 "limit is reached (%s)" % exc.strerror)
            except RuntimeError as exc:
                raise AgentError("KERNEL_START_FAILED", str(exc))
        return {"pid": kernel.proc.pid, "started": started}

    def watch_children(self):
        """Before a blocking read of the next request (direct channel): wait for it; meanwhile report the
        kernel's death (the service is waiting on the channel and would not hear of it otherwise), reap
        what else ends (orphans come to this process when it is the sandbox's pid 1), and hibernate once
        idle for CIW_IDLE_MS."""
        deadline = time.monotonic() + self.idle_s if self.idle_s > 0 else None
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            watch = [0, self.wake_r]
            if self.lifeline:
                # Watched until it hangs up (no service process holds it); then checked once a second.
                if self.orphan_since is None:
                    watch.append(self.lifeline)
                else:
                    timeout = 1.0 if timeout is None else min(timeout, 1.0)
            ready, _, _ = select.select(watch, [], [], timeout)
            if self.lifeline and self.watch_lifeline(self.lifeline in ready):
                continue
            if self.wake_r in ready:
                try:
                    os.read(self.wake_r, 4096)
                except BlockingIOError:
                    pass
                self.reap()
            if 0 in ready:
                return
            if not ready and self.can_hibernate():
                self.hibernate()
            if not ready:
                deadline = None  # cannot hibernate now (a JavaScript kernel holds state): wait for requests

    def watch_lifeline(self, hung_up):
        """A sandbox that outlives the service waits CIW_ORPHAN_MS for the next service process once the last
        one went away (nobody holds the lifeline FIFO's write end), then ends: this process is its pid 1.
        True when the lifeline alone woke the wait."""
        if self.orphan_since is None and hung_up:
            self.orphan_since = time.monotonic()
        elif self.orphan_since is not None and not hung_up_fifo(self.lifeline):
            self.orphan_since = None  # a service process took the sandbox over
        if self.orphan_since is not None and self.orphan_s > 0 and time.monotonic() - self.orphan_since >= self.orphan_s:
            for kernel in self.all_kernels():
                kernel.stop()
            if self.procs is not None:
                self.procs.stop_all()
            os._exit(0)
        return hung_up

    def all_kernels(self):
        return [k for k in [self.direct, *self.kernels.values(), *(c.kernel for c in self.contexts.values())] if k is not None]

    def reap(self):
        """Reports the kernel's death, and collects every other child that ended: orphans (they come to this
        process when it is the sandbox's pid 1), and a JavaScript kernel (its Kernel sees the exit status)."""
        while True:
            kernel = self.direct
            if kernel.proc is not None and kernel.proc.poll() is not None:
                status = kernel.proc.returncode
                kernel.stop()  # kills what is left of its session
                self.send({"notice": "kernel_exit", "status": status})
            try:
                ended = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if ended is None:
                return
            if kernel.proc is not None and ended.si_pid == kernel.proc.pid:
                continue
            other = next((k for k in self.all_kernels() if k.proc is not None and k.proc.pid == ended.si_pid), None)
            if other is not None:
                other.proc.poll()
            elif self.procs is not None and (collected := self.procs.collect(ended.si_pid)) is not None:
                if not collected:
                    return  # a background process whose thread is collecting it right now (and reports its end)
            else:
                try:
                    os.waitpid(ended.si_pid, os.WNOHANG)
                except ChildProcessError:
                    pass  # collected meanwhile by a background process's thread

    def can_hibernate(self):
        """Nothing here holds state the next request needs: no JavaScript kernel (it would lose its
        variables), no network relay, and the program to become is there."""
        js = self.kernels["javascript"]
        return (self.direct is not None and self.relay is None and (js.proc is None or js.proc.poll() is not None)
                and not self.contexts and (self.procs is None or not (self.procs.busy() or self.watches.busy()))
                and os.access(IDLE_PROGRAM, os.X_OK))

    def hibernate(self):
        """Become ciw-idle (ciw_idle.c): same pid, same descriptors, the kernel still a child. It execs a
        new supervisor when the next request comes and reports the kernel's death meanwhile. An idle
        sandbox is then the kernel and a few hundred KiB instead of a second Python process."""
        kernel = self.direct.proc
        channel = {self.channel_fd, self.channel_out_fd, *([self.lifeline] if self.lifeline else [])}
        for fd in channel:
            os.set_inheritable(fd, True)
        try:
            os.execv(IDLE_PROGRAM, [IDLE_PROGRAM, str(kernel.pid if kernel is not None else 0), sys.executable, "-I",
                                    "-S", "-u", os.path.join(AGENT_DIR, "agent.py"), "--kernel-starts", str(self.kernel_starts)])
        except OSError:
            for fd in channel:
                os.set_inheritable(fd, False)
            self.idle_s = 0  # stay awake

    def handle(self, req, blob):
        if req.get("rebase"):
            # The direct kernel ran since this process last looked: what it made is not new any more.
            self.files = snapshot()
        handler = OPS.get(req["op"])
        if handler is None:
            raise AgentError("UNKNOWN_OP", "unknown operation %r" % req["op"])
        return handler(self, req, blob)

    def op_kernel(self, req, _blob):
        return self.kernel_op(req["op"]), b""

    def op_exec(self, req, _blob):
        language = req.get("language") or "python"
        if req.get("context"):
            return ciw_contexts.execute(self, req)
        kernel = self.kernels.get(language)
        if language == "python" and self.direct is not None:
            raise AgentError("USE_DIRECT_KERNEL", "Python runs on the direct channel in this sandbox")
        if kernel is None:
            raise AgentError("UNSUPPORTED_LANGUAGE", "no kernel for language %r" % language)
        if language == "javascript" and kernel.proc is None and not _on_path("node", self.env.get("PATH", "")):
            raise AgentError("UNSUPPORTED_LANGUAGE", "JavaScript needs Node.js under /usr on the host (e.g. /usr/bin/node); "
                             "it is not installed there")
        capture = self.capture(req)
        res = kernel.execute(req["code"], req["timeout_ms"] / 1000, self.grace_s, capture, req.get("inline_images"),
                             req.get("env"))
        return self.finish(res, capture), b""

    def op_shell(self, req, _blob):
        capture = self.capture(req)
        shell_env = dict(self.env)
        shell_env.update(req.get("env") or {})
        cwd = req.get("cwd") or WORKSPACE
        cwd = cwd if os.path.isabs(cwd) else os.path.join(WORKSPACE, cwd)
        res = run_shell(req["command"], req["timeout_ms"] / 1000, cwd, shell_env, capture, self.cpu_limit_s)
        return self.finish(res, capture), b""

    def op_write(self, req, blob):
        written = write_file(req["path"], blob.chunks() if blob else (), bool(req.get("append")))
        # A file put in by the client is not an artifact of the next call.
        st = os.stat(written["path"])
        self.files[written["path"]] = (st.st_mtime_ns, st.st_size)
        return written, b""

    def op_read(self, req, _blob):
        real, opened = open_file(req["path"], int(req["max_bytes"]))
        return {"path": real, "size": opened.size}, opened

    def op_stat(self, req, _blob):
        return stat_path(req["path"], req.get("follow", True)), b""

    def op_list(self, req, _blob):
        return list_dir(req.get("path") or ".", bool(req.get("recursive")), int(req.get("limit") or 10000),
                        int(req.get("depth") or 0)), b""

    def op_ping(self, _req, _blob):
        """Also what a service process that takes this sandbox over needs to know: whether a kernel runs."""
        if self.direct is not None:
            self.reap()
        direct = self.direct is not None and self.direct.proc is not None
        return {"pid": os.getpid(), "direct": self.direct is not None, "direct_kernel": direct,
                "kernel_starts": self.kernel_starts}, b""

    def serve(self, stdin, announce=True):
        """Answers requests from `stdin` until it ends. Returns True at the end of the stream."""
        if announce:
            self.send({"ready": True, "pid": os.getpid(), "direct": self.direct is not None})
            prepare_site()  # while the service hands the sandbox out: the first kernel then starts in milliseconds
        while True:
            line = stdin.readline()
            if not line:
                return True
            try:
                req = json.loads(line)
            except ValueError:
                continue  # the rest of a request a service that went away left half-written, ended by the next
            # A file's content is read as it is written, not first into memory.
            blob = stdin.payload(req["blob"]) if req.get("blob") else None
            rid = req.get("id")
            started = time.monotonic()
            if self.relay is not None and req.get("op") in ("exec", "shell"):
                self.relay.ensure()
            try:
                reply, reply_blob = self.handle(req, blob)
                reply.update({"id": rid, "ok": True})
            except AgentError as exc:
                reply, reply_blob = {"id": rid, "ok": False, "code": exc.code, "message": exc.message}, b""
            except (ValueError, UnicodeError) as exc:
                # A value of the request the OS cannot take (the service refuses the ones it knows of).
                reply, reply_blob = {"id": rid, "ok": False, "code": "VALIDATION_FAILED",
                                     "message": "the request holds a value the sandbox cannot use (%s)" % type(exc).__name__}, b""
            except Exception as exc:  # noqa: BLE001 - report, never die
                # The service logs the detail; the caller gets a generic 500 (no internal paths or text).
                reply, reply_blob = {"id": rid, "ok": False, "code": "AGENT_FAILURE",
                                     "message": "%s: %s" % (type(exc).__name__, exc)}, b""
            if blob is not None:
                blob.drain()  # what a failed write left unread
            if self.direct is not None:
                self.reap()  # a kernel killed meanwhile (kill -9 -1 in a command) is reported before the reply
            reply["duration_ms"] = round((time.monotonic() - started) * 1000, 3)
            self.send(reply, reply_blob)
            while self.after_reply:
                self.after_reply.pop(0)()


# The ops the service may ask for, by name: the same names as AGENT_OPS in src/backends/agent/protocol.ts
# (test/unit/agent-protocol.test.ts checks that the two lists agree).
OPS = {
    "exec": Supervisor.op_exec,
    "shell": Supervisor.op_shell,
    "write": Supervisor.op_write,
    "read": Supervisor.op_read,
    "stat": Supervisor.op_stat,
    "list": Supervisor.op_list,
    "ping": Supervisor.op_ping,
    "state": ciw_snapshot.op_state,
    "snapshot": ciw_snapshot.op_snapshot,
    "restore": ciw_snapshot.op_restore,
    **{op: Supervisor.op_kernel for op in ("kernel_start", "kernel_interrupt", "kernel_restart")},
    **{op: lambda sup, req, blob, op=op: getattr(__import__("ciw_rollback"), "op_" + op)(sup, req, blob)
       for op in ("checkpoints", "rollback")},
    **ciw_ops.OPS,
    **{op: ciw_contexts.op_context for op in ("context_create", "context_restart", "context_remove")},
}
