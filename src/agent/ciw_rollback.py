"""The supervisor's side of checkpoints (ciw_checkpoint.py keeps them, in the kernel): listing them, and a
rollback — the later checkpoints and the kernel end, the files are put back, the chosen fork is adopted as
the kernel and woken."""
import os
import signal
import time

from ciw_checkpoint import become_subreaper, end, is_checkpoint
from ciw_checkpoint_files import INDEX, checked_manifest, collect_garbage, load_index, load_manifest, restore_files, write_json
from ciw_common import AgentError
from ciw_shell import kill_session


def kernel_env(python_env):
    """The direct kernel's environment: with the checkpoint settings, which make this process a subreaper (the
    forks of a kernel that ended come to it, pid 1 or not)."""
    env = dict(python_env, **{k: os.environ[k] for k in ("CIW_CHECKPOINTS_KEPT", "CIW_CHECKPOINT_MAX_FILE_BYTES", "CIW_CHECKPOINT_WAIT_MS")
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
            "dropped": dropped, "files": files, "threads": target.get("threads", 0), "not_rolled_back": kept_going,
            "calls_after": target.get("calls_after")}, b""


def listing(kernel_pid):
    """The checkpoints, oldest first, each with whether its fork is still there."""
    index = load_index()
    entries = []
    for e in index["entries"][-64:]:  # CHECKPOINTS_KEPT is at most 50; more is code in the sandbox writing the index
        entry = {k: e.get(k) for k in ("id", "pid", "kernel", "call", "time", "after", "files", "threads", "skipped")
                 if e.get(k) is not None}
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
    target = dict(index["entries"][at])
    calls = index.get("calls", 0) - target.get("call", 0) if isinstance(target.get("call"), int) else None
    target["calls_after"] = calls if calls is not None and calls >= 0 else None  # the kernel adds its own since
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
    if isinstance(target.get("call"), int):
        index["calls"] = target["call"]  # the calls after it are undone: counting goes on from there
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
