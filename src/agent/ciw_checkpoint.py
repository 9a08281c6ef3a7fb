"""Checkpoints (undo): after each call, the kernel keeps a stopped fork of itself — its whole state,
copy-on-write — and the workspace's files as they were, so that a rollback gives back both.

What is where:
- the forks: processes named "ciw-checkpoint", each in a session of its own (a kernel restart's session kill
  spares them), blocked in sigwaitinfo with every signal blocked, not dumpable (no ptrace, no /proc/<pid>/mem),
  first in line for the OOM killer. Only SIGUSR1 sent with kill() by the supervisor wakes one; SIGKILL, which
  nothing can block, ends it — then the list says it is gone;
- the files: copies in the sandbox's /tmp, and the index of the checkpoints (ciw_checkpoint_files.py).

The kernel takes checkpoints (take(), after a reply is sent, before it reads the next request); the
supervisor lists them and rolls back (ciw_rollback.py): it kills the kernel, puts the files back,
adopts the fork as the kernel and wakes it.
"""
import errno
import json
import os
import select
import signal
import time

from ciw_common import AGENT_DIR
from ciw_checkpoint_files import INDEX, DiskFull, FileRecord, collect_garbage, load_index, write_bytes, write_json

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

def _named(pid):
    try:
        with open("/proc/%d/comm" % pid, "rb") as f:
            return f.read().strip() == NAME
    except OSError:
        return False


def is_checkpoint(pid):
    """Whether `pid` is a live checkpoint: by its name, and not dying (a zombie, or on its way: its memory gone)."""
    try:
        if not _named(pid):
            return False
        with open("/proc/%d/stat" % pid, "rb") as f:
            if f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X"):
                return False
        with open("/proc/%d/statm" % pid, "rb") as f:
            return int(f.read().split()[0]) > 0
    except (OSError, IndexError, ValueError):
        return False


_ended = []  # checkpoints this process killed and has not collected yet (its children)


def end(pid):
    """SIGKILLs a checkpoint. It is not waited for (freeing its page tables takes a while): a checkpoint
    that is this process's child is collected by a later call (collect_ended), else by the supervisor."""
    collect_ended()
    try:
        if os.waitpid(pid, os.WNOHANG)[0]:
            return  # it had ended, and is collected now
        ours = True  # this process's child, running: its name says whether it is a checkpoint
    except ChildProcessError:
        ours = False
    if not (_named(pid) if ours else is_checkpoint(pid)):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        return
    _ended.append(pid)


def collect_ended():
    for pid in list(_ended):
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == 0:
                continue  # still on its way out
        except ChildProcessError:
            pass  # not this process's child (its kernel ended): the supervisor collects it
        _ended.remove(pid)


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

    def __init__(self, kept, max_file_bytes, on_restore):
        self.kept = kept
        self.on_restore = on_restore  # puts back in the woken fork what fork() did not carry (helper threads)
        self.files = FileRecord(max_file_bytes)
        self.warning = None  # why the last checkpoint could not be kept, for the next reply
        self.skipped = 0  # calls before this one that left no checkpoint (set by the caller)
        # Who may wake a checkpoint: the supervisor, this kernel's parent now. Not getppid() at each fork: a
        # kernel made of a checkpoint keeps its dying predecessor as parent for a moment.
        self.supervisor = os.getppid()
        self._index = None  # (the file's identity, its content) as this kernel last read or wrote it
        self._json = {}  # entry id -> its JSON: an entry never changes once written
        global _kernel_dumpable
        _kernel_dumpable = _libc_prctl()(_PR_GET_DUMPABLE, 0, 0, 0, 0)

    def take(self, after, force_files=False):
        """Keeps a checkpoint of now. Returns True in the fork once it was woken (a rollback made it the
        kernel), False in the kernel."""
        index = self._load_index()
        # The newest checkpoint is "now" only if it is the last call's; calls that left none count too.
        # A rollback's checkpoint keeps the state it restored: no call of its own.
        index["calls"] = index.get("calls", 0) + (0 if after.get("kind") == "rollback" else 1 + self.skipped)
        outcome = self._take(index, after, force_files)
        self.warning = None if outcome is True else outcome
        if outcome is True:
            return True
        if self.warning is not None:
            try:
                write_json(INDEX, index)
            except (OSError, DiskFull):
                pass
        self._remember_index(index)
        return False

    def _load_index(self):
        """The index as this kernel last wrote it, unless the file changed since (a rollback rewrote it, code
        in the sandbox did): parsing it each call would cost a tenth of a millisecond."""
        try:
            st = os.stat(INDEX)
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            key = None
        if key is None or self._index is None or self._index[0] != key:
            self._index = (key, load_index())
        cached = self._index[1]
        return dict(cached, entries=list(cached["entries"]))

    def _remember_index(self, index):
        try:
            st = os.stat(INDEX)
            self._index = ((st.st_ino, st.st_mtime_ns, st.st_size), index)
        except OSError:
            self._index = None

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
        if self.skipped:
            entry["skipped"] = self.skipped  # calls before the one it follows that left no checkpoint
        if threads:
            entry["threads"] = threads
        index["next"] += 1
        for attempt in range(2):
            pending = self._serialized(dict(index, entries=index["entries"] + [entry]))
            at = pending.rfind(b'{"pid":-1,')
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
        entry["pid"] = pid
        index["entries"].append(entry)
        try:
            write_bytes(INDEX, b"%s{\"pid\":%d,%s" % (pending[:at], pid, pending[at + len(b'{"pid":-1,'):]))
        except OSError:
            end(pid)
            index["entries"].pop()
            return "the sandbox's /tmp is full"
        return None

    def _serialized(self, index):
        """The index as JSON, each entry's text made once (most of them are the same from call to call)."""
        parts = []
        for e in index["entries"]:
            text = self._json.get(e.get("id")) if e.get("pid") != -1 else None  # -1: the one being taken
            if text is None:
                text = json.dumps(e, separators=(",", ":"))
                if e.get("pid") != -1:
                    self._json[e.get("id")] = text
            parts.append(text)
        live = {e.get("id") for e in index["entries"]}
        for key in [k for k in self._json if k not in live]:
            del self._json[key]
        return ('{"next":%d,"calls":%d,"entries":[%s]}' % (index["next"], index["calls"], ",".join(parts))).encode()

    def _drop(self, index, count):
        if count <= 0:
            return
        gone, index["entries"] = index["entries"][:count], index["entries"][count:]
        for entry in gone:
            end(entry["pid"])
        if {e.get("manifest") for e in gone} - {e.get("manifest") for e in index["entries"]}:
            collect_garbage(index)
