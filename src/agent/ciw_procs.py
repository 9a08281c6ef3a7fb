"""Background processes and file watches: what runs on its own beside the calls the supervisor serves.

A process started here (op proc_start) is a session of its own, with pipes or a pseudo-terminal; a thread per
process forwards its output to the service as frames of their own, {"proc": pid, "stream": ..., "data": base64},
and its end as {"proc": pid, "end": {...}}, sent under the supervisor's frame lock. The service keeps the
exit status until it is read. A watch (watch_start) forwards inotify events of a directory as
{"watch": id, "events": [...]}. Both are bounded: processes and watches per sandbox, and the output one process
may forward (the rest is read and dropped, so the process never blocks on a full pipe)."""
import base64
import errno
import os
import select
import signal
import threading
import time

from ciw_common import READ_CHUNK, WORKSPACE, AgentError
from ciw_files import resolve
from ciw_shell import limit_cpu

MAX_PROCESSES = 32
MAX_WATCHES = 16
STDIN_WAIT_S = 2.0
SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGKILL": signal.SIGKILL, "SIGINT": signal.SIGINT,
           "SIGHUP": signal.SIGHUP, "SIGQUIT": signal.SIGQUIT, "SIGUSR1": signal.SIGUSR1,
           "SIGUSR2": signal.SIGUSR2, "SIGCONT": signal.SIGCONT, "SIGSTOP": signal.SIGSTOP}


class Process:
    def __init__(self, popen, config, tag, master, cap):
        self.popen = popen
        self.pid = popen.pid
        self.config = config
        self.tag = tag
        self.master = master  # the pty's master end, or None
        self.stdin = master if master is not None else (popen.stdin.fileno() if popen.stdin else None)
        self.cap = cap
        self.sent = 0
        self.truncated = False


class Procs:
    def __init__(self, sup):
        self.sup = sup
        self.table = {}
        self.lock = threading.Lock()

    def busy(self):
        return bool(self.table)

    def start(self, req):
        import subprocess  # as in run_shell: only sandboxes that start processes pay for the module
        with self.lock:
            if len(self.table) >= MAX_PROCESSES:
                raise AgentError("PROCESS_LIMIT_REACHED", "%d processes already run in this sandbox; wait for one to "
                                 "end or kill one" % MAX_PROCESSES)
        cmd = req["cmd"]
        args = [str(a) for a in req.get("args") or []]
        env = dict(self.sup.env)
        env.update(req.get("envs") or {})
        cwd = req.get("cwd") or WORKSPACE
        cwd = cwd if os.path.isabs(cwd) else os.path.join(WORKSPACE, cwd)
        pty_size = req.get("pty")
        master = slave = None
        kwargs = {}
        if pty_size:
            import fcntl
            import pty
            import struct
            import termios
            master, slave = pty.openpty()
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", int(pty_size.get("rows") or 24),
                                                               int(pty_size.get("cols") or 80), 0, 0))
            env.setdefault("TERM", "xterm-256color")
            kwargs = {"stdin": slave, "stdout": slave, "stderr": slave,
                      "preexec_fn": lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0)}
        else:
            kwargs = {"stdin": subprocess.PIPE if req.get("stdin") else subprocess.DEVNULL,
                      "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
        try:
            popen = subprocess.Popen([cmd, *args], cwd=cwd, env=env, start_new_session=True, **kwargs)
        except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
            if master is not None:
                os.close(master)
            where = cwd if exc.filename == cwd else cmd
            raise AgentError("BAD_COMMAND", "cannot start %r: %s (%s)" % (cmd[:200], exc.strerror, where[:200]))
        except BlockingIOError as exc:
            if master is not None:
                os.close(master)
            raise AgentError("PROCESS_LIMIT_REACHED", "could not start a process: the sandbox's process limit is "
                             "reached (%s)" % exc.strerror)
        finally:
            if slave is not None:
                os.close(slave)
        limit_cpu(popen.pid, self.sup.cpu_limit_s)
        config = {"cmd": cmd, "args": args, "envs": req.get("envs") or {}, "cwd": cwd}
        proc = Process(popen, config, req.get("tag"), master, self.sup.max_output)
        with self.lock:
            self.table[proc.pid] = proc
        # The reader starts once the reply went out: the service hears of the pid before its first output.
        self.sup.after_reply.append(lambda: threading.Thread(target=self._forward, args=(proc,), daemon=True).start())
        return {"pid": proc.pid}

    def _send_output(self, proc, stream, data):
        room = proc.cap - proc.sent
        if room <= 0:
            if not proc.truncated:
                proc.truncated = True
                self.sup.send({"proc": proc.pid, "truncated": True})
            return
        data = data[:room]
        proc.sent += len(data)
        self.sup.send({"proc": proc.pid, "stream": stream, "data": base64.b64encode(data).decode("ascii")})

    def _forward(self, proc):
        """Forwards output until the process ends and its pipes are drained (or closed by everyone)."""
        if proc.master is not None:
            fds = {proc.master: "pty"}
        else:
            fds = {proc.popen.stdout.fileno(): "stdout", proc.popen.stderr.fileno(): "stderr"}
        exited_at = None
        while fds:
            timeout = 0.2 if exited_at is None else 0.05
            try:
                ready, _, _ = select.select(list(fds), [], [], timeout)
            except InterruptedError:
                continue
            for fd in ready:
                try:
                    data = os.read(fd, READ_CHUNK)
                except OSError as exc:  # EIO: the pty's last slave end is closed
                    if exc.errno == errno.EINTR:
                        continue
                    data = b""
                if data:
                    self._send_output(proc, fds[fd], data)
                else:
                    del fds[fd]
            if proc.popen.poll() is not None:
                # Ended: what its pipes hold is forwarded; what a child of it still writes there is not waited for.
                if exited_at is None:
                    exited_at = 0
                elif not ready:
                    break
        while proc.popen.poll() is None:  # it closed its output but runs on: polled, so that reap() never waits on it
            time.sleep(0.2)
        code = proc.popen.returncode
        with self.lock:
            self.table.pop(proc.pid, None)
        for f in (proc.popen.stdin, proc.popen.stdout, proc.popen.stderr):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
        if proc.master is not None:
            try:
                os.close(proc.master)
            except OSError:
                pass
        end = {"exit_code": code if code >= 0 else 128 - code, "exited": code >= 0,
               "status": "exit status %d" % code if code >= 0 else "signal: %s" % _signal_name(-code)}
        if proc.truncated:
            end["error"] = "the output passed the %d-byte limit; the rest was dropped" % proc.cap
        self.sup.send({"proc": proc.pid, "end": end})

    def get(self, pid):
        with self.lock:
            proc = self.table.get(int(pid))
        if proc is None:
            raise AgentError("PROCESS_NOT_FOUND", "no running process with pid %s in this sandbox" % pid)
        return proc

    def input(self, pid, data):
        proc = self.get(pid)
        if proc.stdin is None:
            raise AgentError("STDIN_CLOSED", "process %d has no stdin open (start it with stdin enabled)" % proc.pid)
        view = memoryview(data)
        while view:
            _, ready, _ = select.select([], [proc.stdin], [], STDIN_WAIT_S)
            if not ready:
                raise AgentError("STDIN_FULL", "process %d does not read its stdin; %d bytes were not written"
                                 % (proc.pid, len(view)))
            try:
                view = view[os.write(proc.stdin, view[:65536]):]
            except OSError as exc:
                raise AgentError("STDIN_CLOSED", "process %d closed its stdin (%s)" % (proc.pid, exc.strerror))
        return {"pid": proc.pid}

    def close_stdin(self, pid):
        proc = self.get(pid)
        if proc.master is not None:
            os.write(proc.master, b"\x04")  # end of file, as a terminal says it
        elif proc.popen.stdin is not None:
            proc.popen.stdin.close()
            proc.stdin = None
        return {"pid": proc.pid}

    def signal(self, pid, name):
        proc = self.get(pid)
        sig = SIGNALS.get(name)
        if sig is None:
            raise AgentError("VALIDATION_FAILED", "unknown signal %r; use one of %s" % (name, ", ".join(SIGNALS)))
        try:
            os.killpg(proc.pid, sig)
        except OSError:
            try:
                os.kill(proc.pid, sig)
            except OSError:
                pass
        return {"pid": proc.pid}

    def resize(self, pid, cols, rows):
        proc = self.get(pid)
        if proc.master is None:
            raise AgentError("NOT_A_TERMINAL", "process %d has no terminal to resize" % proc.pid)
        import fcntl
        import struct
        import termios
        fcntl.ioctl(proc.master, termios.TIOCSWINSZ, struct.pack("HHHH", int(rows), int(cols), 0, 0))
        return {"pid": proc.pid}

    def listing(self):
        with self.lock:
            procs = list(self.table.values())
        return {"processes": [{"pid": p.pid, "tag": p.tag, "config": p.config, "pty": p.master is not None}
                              for p in procs if p.popen.poll() is None]}

    def collect(self, pid):
        """The supervisor saw `pid` end. None when it is not one of these processes; else whether its status is
        collected now (kept for its thread, which reports the end) — False while its thread is collecting it."""
        with self.lock:
            proc = self.table.get(pid)
        if proc is None:
            return None
        return proc.popen.poll() is not None

    def stop_all(self):
        from ciw_shell import kill_session
        with self.lock:
            procs = list(self.table.values())
        for p in procs:
            kill_session(p.pid)


def _signal_name(num):
    try:
        return signal.Signals(num).name
    except ValueError:
        return str(num)


# inotify(7)
_IN_MODIFY, _IN_ATTRIB, _IN_CLOSE_WRITE = 0x2, 0x4, 0x8
_IN_MOVED_FROM, _IN_MOVED_TO, _IN_CREATE, _IN_DELETE = 0x40, 0x80, 0x100, 0x200
_IN_ISDIR, _IN_Q_OVERFLOW, _IN_IGNORED = 0x40000000, 0x4000, 0x8000
_MASK = _IN_MODIFY | _IN_ATTRIB | _IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE
_KINDS = ((_IN_CREATE, "create"), (_IN_MOVED_TO, "create"), (_IN_MODIFY, "write"), (_IN_DELETE, "remove"),
          (_IN_MOVED_FROM, "rename"), (_IN_ATTRIB, "chmod"))


class Watches:
    """inotify watches of directories, one thread for all of them; events go out as frames."""

    def __init__(self, sup):
        self.sup = sup
        self.fd = None
        self.libc = None
        self.watches = {}  # id -> (root, recursive)
        self.wds = {}  # wd -> (id, directory)
        self.next_id = 1
        self.lock = threading.Lock()

    def busy(self):
        return bool(self.watches)

    def _ensure(self):
        if self.fd is not None:
            return
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(os.O_CLOEXEC)
        if fd < 0:
            raise AgentError("NOT_SUPPORTED", "file watching (inotify) is not available in this sandbox")
        self.libc, self.fd = libc, fd
        threading.Thread(target=self._run, daemon=True).start()

    def _add(self, wid, directory):
        wd = self.libc.inotify_add_watch(self.fd, os.fsencode(directory), _MASK)
        if wd >= 0:
            self.wds[wd] = (wid, directory)
        return wd

    def start(self, path, recursive):
        real = resolve(path)
        if not os.path.isdir(real):
            raise AgentError("NOT_A_DIRECTORY", "%s is not a directory" % real)
        with self.lock:
            if len(self.watches) >= MAX_WATCHES:
                raise AgentError("WATCH_LIMIT_REACHED", "%d directories are already watched in this sandbox; remove a "
                                 "watch first" % MAX_WATCHES)
            self._ensure()
            wid = "w%d" % self.next_id
            self.next_id += 1
            self.watches[wid] = (real, bool(recursive))
            if self._add(wid, real) < 0:
                del self.watches[wid]
                raise AgentError("WATCH_LIMIT_REACHED", "cannot watch %s: the system's inotify watches are used up" % real)
            if recursive:
                for dirpath, dirnames, _ in os.walk(real):
                    for name in dirnames:
                        self._add(wid, os.path.join(dirpath, name))
        return {"watch_id": wid, "path": real}

    def stop(self, wid):
        with self.lock:
            if self.watches.pop(wid, None) is None:
                raise AgentError("WATCH_NOT_FOUND", "no watch %r in this sandbox" % wid)
            for wd in [wd for wd, (w, _) in self.wds.items() if w == wid]:
                self.libc.inotify_rm_watch(self.fd, wd)
                self.wds.pop(wd, None)
        return {"watch_id": wid}

    def _run(self):
        import struct
        while True:
            try:
                data = os.read(self.fd, 65536)
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                return
            out = {}
            offset = 0
            with self.lock:
                while offset + 16 <= len(data):
                    wd, mask, _cookie, length = struct.unpack_from("iIII", data, offset)
                    name = data[offset + 16:offset + 16 + length].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                    offset += 16 + length
                    if mask & _IN_IGNORED:
                        self.wds.pop(wd, None)
                        continue
                    owner = self.wds.get(wd)
                    if owner is None or owner[0] not in self.watches or not name:
                        continue
                    wid, directory = owner
                    root, recursive = self.watches[wid]
                    full = os.path.join(directory, name)
                    for bit, kind in _KINDS:
                        if mask & bit:
                            out.setdefault(wid, []).append({"name": os.path.relpath(full, root), "path": full, "type": kind})
                            break
                    if recursive and mask & _IN_ISDIR and mask & (_IN_CREATE | _IN_MOVED_TO):
                        # What was made in it before its watch was added is reported as created too.
                        self._add(wid, full)
                        for dirpath, dirnames, filenames in os.walk(full):
                            for name in dirnames:
                                self._add(wid, os.path.join(dirpath, name))
                            for name in dirnames + filenames:
                                path = os.path.join(dirpath, name)
                                out.setdefault(wid, []).append({"name": os.path.relpath(path, root), "path": path, "type": "create"})
            for wid, events in out.items():
                self.sup.send({"watch": wid, "events": events[:1000]})
