"""Checkpoints as the direct kernel takes them (ciw_checkpoint.py): after each reply, with the kernel's own
helpers put back in the fork that a rollback wakes."""
import json
import os
import sys
import time

import ciw_rich
from ciw_kernel import _Interrupts, _usage


def kernel_checkpoints(capture, reader, channel_fd):
    """The kernel's checkpoints (ciw_checkpoint), when the sandbox keeps any: CIW_CHECKPOINTS_KEPT."""
    kept = int(os.environ.pop("CIW_CHECKPOINTS_KEPT", "0") or 0)
    max_file = int(os.environ.pop("CIW_CHECKPOINT_MAX_FILE_BYTES", "0") or 0)
    wait_s = float(os.environ.pop("CIW_CHECKPOINT_WAIT_MS", "0") or 0) / 1000
    if kept <= 0:
        return None
    from ciw_capture import TextSink
    from ciw_checkpoint import Checkpoints

    def restored():
        # Only the thread that forked lives in the fork: the output pump starts again, and the streams and the
        # interrupt hook that fork() handed to "a child of user code" are the kernel's again.
        capture.restart()
        sys.stdout = TextSink(capture, 1)
        sys.stderr = TextSink(capture, 2)
        _Interrupts.on_interrupt = capture.flush_for_interrupt

    def next_request(timeout):
        """Whether the next request is there, or comes within `timeout` seconds."""
        import select
        return b"\n" in reader.buf or bool(select.select([channel_fd], [], [], timeout)[0])

    return KernelCheckpoints(Checkpoints(kept, max_file, None), [restored], next_request, wait_s)


def checkpoint_requests(checkpoints, capture):
    """What the kernel does with a request that is not a call: a checkpoint asked for by the service."""

    def control(req, cell_no):
        # After a call the kernel did not see (a shell command) it is answered once kept, so that the supervisor
        # changes no file meanwhile; right after a rollback, first (the service waits for the restored kernel).
        after = req.get("checkpoint")
        after = after if isinstance(after, dict) and checkpoints is not None else None
        first = after is not None and after.get("kind") == "rollback"
        if after is not None:
            checkpoints.count_skipped(after.pop("skipped", 0))
        # The service waited CHECKPOINT_WAIT_MS for the next call before it asked: no second wait here.
        if after is not None and not first and checkpoints.after_call(after, force_files=True, wait=False):
            return  # the fork, woken by a rollback: this request was answered long ago
        if req.get("id") is not None:
            capture.send({"id": req["id"], "ok": True, "execution_count": cell_no, "checkpoints": checkpoints is not None,
                          "skipped": checkpoints.skipped if checkpoints is not None else 0})
        if first:
            checkpoints.after_call(after, force_files=True, wait=False)

    return control


class KernelCheckpoints:
    """Checkpoints as the direct kernel takes them: after the reply, then a warm-up so that the next call does
    not pay for the copy-on-write faults of the pages every call touches."""

    def __init__(self, checkpoints, on_restore, next_request, wait_s):
        self.checkpoints = checkpoints
        self.on_restore = on_restore
        self.next_request = next_request
        self.wait_s = wait_s
        self.skipped = 0  # calls since the last checkpoint that left none (the next came within wait_s)
        checkpoints.on_restore = self._restored
        self._random = None

    @property
    def warning(self):
        w = self.checkpoints.warning
        return None if w is None else "the previous call left no checkpoint to undo it to: %s" % w

    def _restored(self):
        if self._random is not None and "random" in sys.modules:
            sys.modules["random"].setstate(self._random)  # fork() reseeds random in the child; the cell's state is back
        for fn in self.on_restore:
            fn()

    def count_skipped(self, n):
        if isinstance(n, int) and 0 < n < 1_000_000:
            self.skipped += n

    def after_call(self, after, force_files=False, wait=True):
        """Keeps a checkpoint; True in the fork, once a rollback woke it. Calls that come back to back (the next
        within CHECKPOINT_WAIT_MS) share one: a fork per call would cost each a millisecond."""
        if wait and self.wait_s > 0 and self.next_request(self.wait_s):
            self.skipped += 1
            return False
        self.checkpoints.skipped, self.skipped = self.skipped, 0
        random = sys.modules.get("random")
        self._random = random.getstate() if random is not None else None
        if self.checkpoints.take(after, force_files):
            return True
        _warm_up()
        return False


def _warm_up():
    """Touches what the next call will (the request's parse, a compile and eval, the reply's encoding): after a
    fork those pages are shared with the checkpoint, and the first write to each is a page copy."""
    req = json.loads('{"id": 1, "code": "print(1)", "inline_images": false, "stream": false}')
    eval(compile("None", "<warm-up>", "eval"), {})
    ciw_rich.Cell(0, False)
    json.dumps({"id": req["id"], "ok": True, "duration_ms": 0.1, "execution_count": 1, "usage": _usage(time.process_time())},
               ensure_ascii=False)
