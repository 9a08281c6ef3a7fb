"""Checkpoints (undo): after each call, the kernel keeps a stopped fork of itself — its whole state,
copy-on-write — and the workspace's files as they were, so that a rollback gives back both.

What is where:
- the forks: processes named "ciw-checkpoint", each in a session of its own (a kernel restart's session kill
  spares them), blocked in sigwaitinfo with every signal blocked, not dumpable (no ptrace, no /proc/<pid>/mem),
  first in line for the OOM killer. Only SIGUSR1 sent with kill() by the supervisor wakes one; SIGKILL, which
  nothing can block, ends it — then the list says it is gone;
- the files: copies in the sandbox's /tmp, and the index of the checkpoints (ciw_checkpoint_files.py).

The kernel takes checkpoints (take(), after a reply is sent, before it reads the next request); the
supervisor lists them and rolls back (op_checkpoints, op_rollback): it kills the kernel, puts the files back,
adopts the fork as the kernel and wakes it.
"""
import errno
import json
import os
import select
import signal
import time

from ciw_common import AGENT_DIR, AgentError
from ciw_shell import kill_session
from ciw_checkpoint_files import (INDEX, DiskFull, FileRecord, checked_manifest, collect_garbage, load_index, load_manifest,
                                  restore_files, write_bytes, write_json)

NAME = b"ciw-checkpoint"
SI_USER = 0  # si_code of a signal sent by kill(): its si_pid is the sender's, not something the sender chose

_PR_SET_NAME = 15
_PR_SET_DUMPABLE = 4
_PR_GET_DUMPABLE = 3
_PR_SET_CHILD_SUBREAPER = 36
READY_TIMEOUT_S = 5
_prctl_fn = None


def _libc_prctl():
    """libc's prctl, looked up once, before any fork: a fork's child must not dlopen (another thread of the
    kernel may have held the loader's lock when it forked)."""
    global _prctl_fn
    if _prctl_fn is None:
        import ctypes  # here: the supervisor needs it once, at start
        _prctl_fn = ctypes.CDLL(None, use_errno=True).prctl
    return _prctl_fn


def _prctl(option, arg):
    _libc_prctl()(option, arg, 0, 0, 0)


def _set_name(name):
    _libc_prctl()(_PR_SET_NAME, name, 0, 0, 0)


def become_subreaper():
    """The supervisor: orphans of its kernels (checkpoints whose kernel ended) come to it, pid 1 or not."""
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)


# -- the forks ---------------------------------------------------------------------------------------------

def is_checkpoint(pid):
    """Whether `pid` is a live checkpoint: by its name, and not dying (a zombie, or on its way: its memory gone)."""
    try:
        with open("/proc/%d/comm" % pid, "rb") as f:
            if f.read().strip() != NAME:
                return False
        with open("/proc/%d/stat" % pid, "rb") as f:
            if f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X"):
                return False
        with open("/proc/%d/statm" % pid, "rb") as f:
            return int(f.read().split()[0]) > 0
    except (OSError, IndexError, ValueError):
        return False


def end(pid):
    """SIGKILLs a checkpoint, and collects it when it is this process's child."""
    if not is_checkpoint(pid):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        return
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass  # its kernel ended: the supervisor collects it


_c_fork = None
_kernel_dumpable = 1  # what the kernel's dumpability was (Checkpoints reads it): a woken fork puts it back


def fork_checkpoint(supervisor):
    """A checkpoint of this process: its pid here; 0 in the checkpoint, once `supervisor` woke it (it is then
    the kernel). With ciw-fork.so (ciw_fork.c) the child runs no Python until woken — Python's own after-fork
    work runs then — so it copies almost no page; without it, os.fork() and the same steps in Python."""
    global _c_fork
    if _c_fork is None:
        try:
            import ctypes
            lib = ctypes.PyDLL(os.path.join(AGENT_DIR, "ciw-fork.so"))  # PyDLL: the call keeps the GIL
            lib.ciw_checkpoint_fork.restype = ctypes.c_long
            lib.ciw_checkpoint_fork.argtypes = [ctypes.c_int]
            _c_fork = (lib.ciw_checkpoint_fork, ctypes.pythonapi)
        except (OSError, AttributeError):
            _c_fork = False
    if not _c_fork:
        pid, mask = _fork_checkpoint()
        if pid == 0:
            _sleep_until_woken(supervisor, mask)
        return pid
    fork, api = _c_fork
    api.PyOS_BeforeFork()
    pid = fork(supervisor)
    if pid == 0:
        api.PyOS_AfterFork_Child()
        return 0
    api.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(-pid, os.strerror(-pid))
    return pid


def _fork_checkpoint():
    """fork() with every signal blocked from the first instruction of the child on; the parent goes on once
    the child is a checkpoint (named, in its own session, not dumpable), so that user code never meets a
    half-made one. The pid (0 in the child, with the mask to put back when woken)."""
    _libc_prctl()
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(r)
        os.close(w)
        raise
    if pid == 0:
        os.close(r)
        os.setsid()
        _set_name(NAME)
        _oom_score_adj(1000)  # first: once not dumpable, /proc/self belongs to root
        _prctl(_PR_SET_DUMPABLE, 0)
        os.write(w, b"1")
        os.close(w)
        return 0, mask
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    os.close(w)
    try:
        ready = select.select([r], [], [], READY_TIMEOUT_S)[0] and os.read(r, 1)
    finally:
        os.close(r)
    if not ready:  # it died, or hangs: it is no checkpoint
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except OSError:
            pass
        raise OSError(errno.ECHILD, "the checkpoint's process did not start")
    return pid, None


def _sleep_until_woken(supervisor, mask):
    """The checkpoint's life: nothing runs until the supervisor wakes it (SIGUSR1 by kill())."""
    while True:
        try:
            info = signal.sigwaitinfo({signal.SIGUSR1})
        except InterruptedError:
            continue
        if info.si_code == SI_USER and info.si_pid == supervisor:
            break
    # What was sent to the sleeping fork (from user code) is dropped, not delivered to the restored kernel.
    while True:
        pending = signal.sigpending()
        if not pending or signal.sigtimedwait(pending, 0) is None:
            break
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    _oom_score_adj(0)
    _prctl(_PR_SET_DUMPABLE, _kernel_dumpable)
    _set_name(b"python3")


def _oom_score_adj(value):
    """/proc/self belongs to root while the process is not dumpable (a sandbox a root service started, after
    its setuid): dumpable for the moment of the write (the caller sets it as it must be after)."""
    _prctl(_PR_SET_DUMPABLE, 1)
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(value))
    except OSError:
        pass


class Checkpoints:
    """The kernel's side: take() after each call keeps a checkpoint and drops the oldest past `kept`."""

    def __init__(self, kept, max_file_bytes, lock, on_restore):
        self.kept = kept
        self.lock = lock  # held around fork(): no helper thread of the kernel is inside it then
        self.on_restore = on_restore
        self.files = FileRecord(max_file_bytes)
        self.warning = None  # why the last checkpoint could not be kept, for the next reply
        # Who may wake a checkpoint: the supervisor, this kernel's parent now. Not getppid() at each fork: a
        # kernel made of a checkpoint keeps its dying predecessor as parent for a moment.
        self.supervisor = os.getppid()
        global _kernel_dumpable
        _kernel_dumpable = _libc_prctl()(_PR_GET_DUMPABLE, 0, 0, 0, 0)

    def take(self, after, force_files=False):
        """Keeps a checkpoint of now. Returns True in the fork once it was woken (a rollback made it the
        kernel), False in the kernel."""
        index = load_index()
        index["calls"] = index.get("calls", 0) + 1  # the newest checkpoint is "now" only if it is the last call's
        outcome = self._take(index, after, force_files)
        self.warning = None if outcome is True else outcome
        if outcome is True:
            return True
        if self.warning is not None:
            try:
                write_json(INDEX, index)
            except (OSError, DiskFull):
                pass
        return False

    def _take(self, index, after, force_files):
        """None when a checkpoint was kept; True in the woken fork; else why none could be kept."""
        try:
            try:
                manifest_id, files = self.files.record(index, force_files)
            except DiskFull:
                # The store is full: the oldest checkpoints go first, then the files are tried again.
                self._drop(index, max(1, len(index["entries"]) // 2))
                manifest_id, files = self.files.record(index, True)
        except DiskFull:
            return "the sandbox's /tmp is full (checkpoints keep copies of changed files there)"
        except OSError as exc:
            return "its files could not be copied (%s)" % exc.strerror
        self._drop(index, len(index["entries"]) + 1 - self.kept)
        import threading
        supervisor = self.supervisor
        threads = sum(1 for t in threading.enumerate() if not t.name.startswith("ciw-") and t is not threading.main_thread())
        # The index is written before the fork, its pid left to fill in: every page written after the fork is
        # a page copied, held by the checkpoint.
        entry = {"pid": -1, "id": "c%d" % index["next"], "kernel": os.getpid(), "call": index["calls"], "time": time.time(),
                 "after": after, "manifest": manifest_id, "files": files}
        if threads:
            entry["threads"] = threads
        index["next"] += 1
        pending = json.dumps(dict(index, entries=index["entries"] + [entry]), separators=(",", ":")).encode()
        at = pending.rfind(b'{"pid":-1,')
        for attempt in range(2):
            with self.lock:
                try:
                    pid = fork_checkpoint(supervisor)
                except OSError as exc:
                    pid, error = -1, exc
            if pid == 0:
                self.on_restore()
                return True
            if pid > 0:
                break
            if attempt == 0 and index["entries"] and error.errno in (errno.EAGAIN, errno.ENOMEM):
                self._drop(index, 1)  # at the process or memory limit: the oldest goes first
                continue
            return "the sandbox's process limit is reached" if error.errno == errno.EAGAIN else error.strerror
        try:
            write_bytes(INDEX, b"%s{\"pid\":%d,%s" % (pending[:at], pid, pending[at + len(b'{"pid":-1,'):]))
        except OSError:
            end(pid)
            return "the sandbox's /tmp is full"
        return None

    def _drop(self, index, count):
        if count <= 0:
            return
        gone, index["entries"] = index["entries"][:count], index["entries"][count:]
        for entry in gone:
            end(entry["pid"])
        if {e.get("manifest") for e in gone} - {e.get("manifest") for e in index["entries"]}:
            collect_garbage(index)


# -- the supervisor's side -------------------------------------------------------------------------------------

def kernel_env(python_env):
    """The direct kernel's environment: with the checkpoint settings, which make this process a subreaper (the
    forks of a kernel that ended come to it, pid 1 or not)."""
    env = dict(python_env, **{k: os.environ[k] for k in ("CIW_CHECKPOINTS_KEPT", "CIW_CHECKPOINT_MAX_FILE_BYTES")
                              if os.environ.get(k)})
    if env.get("CIW_CHECKPOINTS_KEPT", "0") != "0":
        become_subreaper()
    return env


def op_checkpoints(sup, _req, _blob):
    """The checkpoints the direct kernel kept (ciw_checkpoint), oldest first, and the kernel's pid."""
    if sup.direct is None:
        raise AgentError("NOT_SUPPORTED", "checkpoints are kept in sandboxes without network only")
    return listing(sup.direct.proc.pid if sup.direct.proc is not None else 0), b""

def op_rollback(sup, req, _blob):
    """Makes checkpoint req["checkpoint"] the kernel: later checkpoints and the kernel end, the files are
    put back, and the fork is adopted and woken. The service then waits for the kernel's word on the
    channel (it answers a checkpoint request)."""
    if sup.direct is None:
        raise AgentError("NOT_SUPPORTED", "checkpoints are kept in sandboxes without network only")
    kernel = sup.direct

    def stop_kernel():
        # The old kernel is killed and not waited for (freeing a large heap takes tens of milliseconds): it is
        # collected once the answer is out, with whatever its session still had.
        old = kernel.stop(wait=False)
        if old is not None:
            _until_exiting(old.pid)
            sup.after_reply.append(lambda: (kill_session(old.pid), old.wait()))

    target, dropped, files = rollback(str(req["checkpoint"]), stop_kernel)
    sup._drain_channel()
    pid = int(target["pid"])
    kernel.adopt(pid)
    wake(pid)
    from ciw_files import snapshot
    sup.files = snapshot()  # what was put back is no call's artifact
    kept_going = []
    js = sup.kernels.get("javascript")
    if js is not None and js.proc is not None and js.proc.poll() is None:
        kept_going.append("the JavaScript interpreter (Node.js cannot fork its state)")
    if sup.contexts:
        kept_going.append("%d extra context(s)" % len(sup.contexts))
    if sup.procs is not None and sup.procs.busy():
        kept_going.append("background processes")
    return {"checkpoint": target.get("id"), "pid": pid, "after": target.get("after"), "time": target.get("time"),
            "dropped": dropped, "files": files, "threads": target.get("threads", 0), "not_rolled_back": kept_going}, b""


def listing(kernel_pid):
    """The checkpoints, oldest first, each with whether its fork is still there."""
    index = load_index()
    entries = []
    for e in index["entries"][-64:]:  # CHECKPOINTS_KEPT is at most 50; more is code in the sandbox writing the index
        entry = {k: e.get(k) for k in ("id", "pid", "kernel", "call", "time", "after", "files", "threads") if e.get(k) is not None}
        entry["alive"] = is_checkpoint(e["pid"])
        entries.append(entry)
    return {"entries": entries, "kernel": kernel_pid, "calls": index.get("calls", 0)}


def rollback(target_id, stop_kernel):
    """Steps 1–3 of a rollback (the supervisor adopts and wakes the fork): the checkpoints after the target
    end, the kernel ends (the fork is then the supervisor's child), the files are put back. Returns the
    target's entry and what was done."""
    index = load_index()
    at = next((i for i, e in enumerate(index["entries"]) if e.get("id") == target_id), None)
    if at is None:
        raise AgentError("CHECKPOINT_NOT_FOUND", "there is no checkpoint %r in this sandbox" % target_id)
    target = index["entries"][at]
    pid = target["pid"]
    if not is_checkpoint(pid):
        raise AgentError("CHECKPOINT_LOST", "checkpoint %s is gone (its process was killed, e.g. by kill -9 -1 "
                         "or the out-of-memory killer)" % target_id)
    try:
        wanted, truncated = checked_manifest(load_manifest(target.get("manifest")))
    except (OSError, ValueError, TypeError) as exc:
        raise AgentError("CHECKPOINT_LOST", "the record of the files of checkpoint %s cannot be read (%s); it was "
                         "removed or changed by code in the sandbox" % (target_id, type(exc).__name__))
    dropped = [e.get("id") for e in index["entries"][at + 1:]]
    for e in index["entries"][at + 1:]:
        end(e["pid"])
    stop_kernel()
    if not is_checkpoint(pid):
        raise AgentError("CHECKPOINT_LOST", "checkpoint %s ended as it was rolled back to; the interpreter is gone, "
                         "and the next call starts a new one" % target_id)
    files = restore_files(wanted, truncated)
    index["entries"] = index["entries"][:at]
    write_json(INDEX, index)
    collect_garbage(dict(index, entries=index["entries"] + [target]))
    return target, dropped, files


def _until_exiting(pid, limit_s=5):
    """Waits until a killed process has begun to exit (PF_EXITING). Before that it may still take a request
    off the kernel channel: a reader woken by SIGKILL first checks whether the pipe has data, and reads it."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            with open("/proc/%d/stat" % pid, "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            if fields[0] in (b"Z", b"X") or int(fields[6]) & 0x4:  # PF_EXITING
                return
        except (OSError, IndexError, ValueError):
            return
        time.sleep(0.0002)


def wake(pid):
    os.kill(pid, signal.SIGCONT)  # a fork stopped with SIGSTOP would not see the wake-up
    os.kill(pid, signal.SIGUSR1)
