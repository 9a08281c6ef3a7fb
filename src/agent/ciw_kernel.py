"""The Python kernel: keeps the user's namespace between calls (agent.py --kernel).

It reads requests on one inherited fd and answers on another; user code's stdout/stderr (fd 1/2) are pipes
the supervisor reads, so output of child processes (os.system) is captured too.
"""
import ast
import errno
import json
import linecache
import os
import resource
import signal
import sys
import time

from ciw_common import AGENT_DIR, WORKSPACE, LineReader, output_limit_error
import ciw_rich

class CpuTimeLimitExceeded(BaseException):
    """Raised in user code when the call used up its CPU-time budget (a BaseException, like
    KeyboardInterrupt, so that `except Exception` in user code does not swallow it)."""


class _Interrupts:
    """SIGINT / SIGXCPU raise only while user code runs, never inside the protocol loop."""

    in_user_code = False

    on_interrupt = None  # direct channel: hands the output so far to the service first

    @classmethod
    def handler(cls, _signum, _frame):
        if cls.in_user_code:
            if cls.on_interrupt is not None:
                cls.on_interrupt()
            raise KeyboardInterrupt

    @classmethod
    def cpu_handler(cls, _signum, _frame):
        if cls.in_user_code:
            raise CpuTimeLimitExceeded("the call used up its CPU-time limit")


def _cpu_used():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _CpuBudget:
    """The per-call CPU-time limit as a soft RLIMIT_CPU: a call may use `seconds` more than the process had
    used when it started. The limit is moved only when less than that is left, so most calls cost one
    getrusage and no setrlimit; it stays in place between calls, where SIGXCPU is ignored."""

    soft = None

    @classmethod
    def arm(cls, seconds):
        used = _cpu_used()
        if cls.soft is not None and cls.soft - used >= seconds:
            return
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        soft = int(used + seconds) + 1
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        try:
            resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
            cls.soft = soft
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
    import traceback  # on the first error, not at start: the kernel is ready sooner
    root = traceback.TracebackException(type(exc), exc, exc.__traceback__)
    te, seen = root, set()
    while te is not None and id(te) not in seen:
        seen.add(id(te))
        frames = [f for f in te.stack if not f.filename.startswith(AGENT_DIR + os.sep)]
        while frames and frames[0].filename == ast.__file__:
            frames.pop(0)
        te.stack = traceback.StackSummary.from_list(frames)
        te = te.__cause__ or te.__context__
    return "".join(root.format())


_current = None  # the Cell being run, for display() and plt.show()


def on_show():
    """plt.show(): the figures shown so far become results now, in order with display() calls."""
    if _current is not None:
        ciw_rich.capture_figures(_current)


def display(*values):
    """Shows values as rich results of the current call, as IPython's display() does."""
    if _current is not None:
        for value in values:
            ciw_rich.add_result("display_data", value, _current, _safe_repr, from_user=True)


def _compile_cell(code, filename):
    """The cell as code objects: its statements to exec and its last bare expression to eval (the value the
    cell shows), either of them None. A one-line expression (`print(x)`, `df.head()`) is compiled straight
    from the source, at half the cost; anything else goes through the AST to split off its last expression."""
    if "\n" not in code.strip():
        try:
            return None, compile(code, filename, "eval")
        except SyntaxError:
            pass  # a statement (x = 1), or a real error that the AST path reports
    tree = ast.parse(code, filename, "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = compile(ast.Expression(tree.body.pop().value), filename, "eval")
    return (compile(tree, filename, "exec") if tree.body else None), last


def _run_cell(ns, code, cell, cpu_limit_s, env=None):
    """Runs one cell; `env`: environment variables set for this cell only (then put back as they were)."""
    if env:
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            return _run_cell(ns, code, cell, cpu_limit_s)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    global _current
    filename = "<cell-%d>" % cell.number
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    error = None
    _current = cell
    try:
        statements, last = _compile_cell(code, filename)
        if cpu_limit_s:
            _CpuBudget.arm(cpu_limit_s)
        _Interrupts.in_user_code = True
        try:
            if statements is not None:
                exec(statements, ns)
            if last is not None:
                value = eval(last, ns)
                if value is not None:
                    ns["_"] = value
                    ciw_rich.add_result("execute_result", value, cell, _safe_repr)
        finally:
            _Interrupts.in_user_code = False
    except BaseException as exc:  # noqa: BLE001 - user code may raise anything, SystemExit included
        _Interrupts.in_user_code = False
        error = _error_of(exc)
    try:
        ciw_rich.capture_figures(cell)
    except Exception as exc:  # noqa: BLE001 - never lose the call's result over a figure
        cell.add({"type": "display_data", "data": {"text/plain": "<figures could not be saved: %s>" % exc}})
    _current = None
    return cell.results, error


def _safe_repr(value):
    try:
        return repr(value)
    except BaseException as exc:  # noqa: BLE001 - a broken __repr__ must not kill the kernel
        return "<unrepresentable %s: %s>" % (type(value).__name__, exc)


def _add_user_site():
    import site
    site.ENABLE_USER_SITE = True
    user_site = site.getusersitepackages()
    if os.path.isdir(user_site) and user_site not in sys.path:
        site.addsitedir(user_site)


def _common_setup():
    """What the kernel does before its first call, whichever channel it serves: signals, the workspace, the
    import path, the preloaded modules. Returns the namespace user code runs in and the CPU-time limit."""
    signal.signal(signal.SIGINT, _Interrupts.handler)
    signal.signal(signal.SIGXCPU, _Interrupts.cpu_handler)
    cpu_limit_s = float(os.environ.pop("CIW_CPU_SECONDS_PER_CALL", "0") or 0)
    ciw_rich.Cell.cap = int(os.environ.pop("CIW_MAX_OUTPUT_BYTES", "0") or 0) or ciw_rich.Cell.cap
    sys.stdin = open(os.devnull, "r")
    os.chdir(WORKSPACE)
    # The kernel is forked from the supervisor, which runs isolated (-I): user code gets the import path a
    # plain `python3` would give it — PYTHONPATH first, then the user's site-packages (pip install --user).
    for entry in reversed([e for e in os.environ.get("PYTHONPATH", "").split(os.pathsep) if e]):
        sys.path.insert(0, entry)
    if "" not in sys.path:
        sys.path.insert(0, "")
    _add_user_site()
    # Figures render with Agg and plt.show() reports them; child Python processes can load the backend too.
    os.environ["MPLBACKEND"] = "module://ciw_mpl_backend"
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [AGENT_DIR, os.environ.get("PYTHONPATH")]))
    for module in filter(None, os.environ.pop("CIW_PRELOAD", "").split(",")):
        try:
            __import__(module.strip())
        except Exception as exc:  # noqa: BLE001 - a missing preload module must not stop the kernel
            print("preload of %s failed: %s" % (module, exc), file=sys.stderr)
    return main_namespace(), cpu_limit_s


def main_namespace():
    """The namespace cells run in: the dict of a new `__main__` module, as in IPython, so that pickle finds
    classes defined in cells and dill can save and restore functions bound to it (ciw_state.py)."""
    import types
    module = types.ModuleType("__main__")
    module.__dict__.update({"__builtins__": __builtins__, "display": display})
    sys.modules["__main__"] = module
    return module.__dict__


def state_request(ns, req):
    """Saves or loads the namespace (a paused sandbox's state): the reply's "state" field."""
    import ciw_state
    try:
        if req["state"] == "save":
            return ciw_state.save(ns, req["path"])
        return ciw_state.load(ns, req["path"])
    except Exception as exc:  # noqa: BLE001 - a full disk, a missing file: said, never fatal
        return {"error": "%s: %s" % (type(exc).__name__, exc)}


def _flush_std_streams():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - user may have closed or replaced the stream
            pass


def _serve(reader, run, control=None):
    """Calls `run(req, cell)` for each request line until the stream ends; requests without code go to
    `control` when it is given (they are not cells). An interrupt that arrives between cells (a timeout that
    came just too late) is dropped."""
    cell_no = 0
    while True:
        try:
            line = reader.readline()
            if not line:
                return
            try:
                req = json.loads(line)
            except ValueError:
                continue  # the rest of a request a service that went away left half-written, ended by the next
            if control is not None and "code" not in req and not req.get("state"):
                control(req, cell_no)
                continue
            cell_no += 1
            run(req, ciw_rich.Cell(cell_no, bool(req.get("inline_images"))))
        except KeyboardInterrupt:
            continue


def _usage(cpu0):
    """What the cell used: this process's CPU time (its threads too), its memory now and at its peak."""
    try:
        with open("/proc/self/statm", "rb") as f:
            rss = int(f.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        rss = None
    return {"cpu_ms": round((time.process_time() - cpu0) * 1000), "memory_bytes": rss,
            "memory_peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def kernel_main(request_fd, reply_fd):
    """The kernel behind the supervisor: requests on one fd, replies on another, output on fds 1/2, which
    the supervisor reads."""
    _plain_std_streams()
    ns, cpu_limit_s = _common_setup()
    replies = os.fdopen(reply_fd, "wb", buffering=0)
    replies.write(b'{"ready":true}\n')

    def run(req, cell):
        if req.get("state"):
            replies.write(json.dumps({"state": state_request(ns, req)}).encode("utf-8", "backslashreplace") + b"\n")
            return
        cpu0 = time.process_time()
        results, error = _run_cell(ns, req["code"], cell, cpu_limit_s, req.get("env"))
        _flush_std_streams()
        reply = json.dumps({"results": results, "error": error, "execution_count": cell.number, "usage": _usage(cpu0)},
                           ensure_ascii=False)
        replies.write(reply.encode("utf-8", "backslashreplace") + b"\n")

    _serve(LineReader(os.fdopen(request_fd, "rb", buffering=0)), run)


def _plain_std_streams():
    """sys.stdout/stderr on fds 1/2, line-buffered as on a terminal, so that prints and child processes'
    output keep their order: the relayed kernel's streams, and those of a child forked by user code on the
    direct channel (the capture's thread and lock stay with the kernel, whose pump reads the child's fds)."""
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)


def _forked_child():
    """A child forked by user code on the direct channel writes to fds 1/2, and leaves the capture alone."""
    _plain_std_streams()
    _Interrupts.on_interrupt = None


def direct_kernel_main(channel_fd, channel_out_fd, ready_fd, max_output):
    """The kernel on the direct channel (local backend): the service sends requests on `channel_fd` and
    reads the replies on `channel_out_fd` (the same socket, or two FIFOs); no process sits in between. The supervisor only starts, interrupts and
    restarts it. Requests are JSON lines {"id", "code", "inline_images", "stream", "rebase"}; replies are
    the supervisor's exec reply (id, ok, results, error, stdout, stderr, output, files...), each preceded
    by a newline; output events {"id", "event": "stdout"|"stderr"|"output_limit", "data"} may come first."""
    from ciw_capture import KernelCapture, TextSink, OutputLimitExceeded
    from ciw_files import WorkspaceWatch, changed_files, snapshot
    import time
    for fd in {channel_fd, channel_out_fd}:
        os.set_inheritable(fd, False)  # user code's child processes must not reach the service
    ns, cpu_limit_s = _common_setup()
    capture = KernelCapture(channel_out_fd, max_output)
    capture.in_user_code = lambda: _Interrupts.in_user_code
    _Interrupts.on_interrupt = capture.flush_for_interrupt
    sys.stdout = TextSink(capture, 1)
    sys.stderr = TextSink(capture, 2)
    os.register_at_fork(after_in_child=_forked_child)
    from ciw_kernel_checkpoints import checkpoint_requests, kernel_checkpoints
    reader = LineReader(os.fdopen(channel_fd, "rb", buffering=0, closefd=False))
    checkpoints = kernel_checkpoints(capture, reader, channel_fd)
    os.write(ready_fd, b'{"ready":true}\n')
    os.close(ready_fd)
    files = None
    watch = WorkspaceWatch()
    if checkpoints is not None:
        def restored():
            nonlocal files
            files = None  # the workspace was put back: looked at afresh by the next call
        checkpoints.on_restore.append(restored)

    def look():
        watch.changed()  # what happened before this walk is in it: those events need no second walk
        dirs = []
        found = snapshot(dirs)
        watch.watch(dirs)
        return found

    def run(req, cell):
        nonlocal files
        if req.get("state"):
            capture.send({"id": req.get("id"), "ok": True, "state": state_request(ns, req)})
            return
        started = time.monotonic()
        # Changes since the last call are reported with this call's — those of background processes —
        # unless the service says the supervisor ran meanwhile (a shell command, an upload): then they are
        # not this call's, and the workspace is looked at afresh first. Events are read once, after the call.
        if files is None or req.get("rebase"):
            files = look()
        capture.begin(req.get("id"), bool(req.get("stream")))
        cpu0 = time.process_time()
        results, error = _run_cell(ns, req["code"], cell, cpu_limit_s, req.get("env"))
        usage = _usage(cpu0)
        _flush_std_streams()
        stdout, stderr, output, truncated = capture.end()
        truncated = truncated or cell.truncated
        if truncated and (error is None or error["name"] in ("KeyboardInterrupt", OutputLimitExceeded.__name__)):
            error = output_limit_error(max_output)
        changed, changed_truncated = [], False
        if watch.changed():
            after = look()
            changed, changed_truncated = changed_files(files, after)
            files = after
        # Fields at their defaults (no error, no output, no files…) are left out: less to write and parse.
        reply = {"id": req.get("id"), "ok": True, "duration_ms": round((time.monotonic() - started) * 1000, 3),
                 "execution_count": cell.number, "usage": usage}
        for key, value in (("results", results), ("error", error), ("stdout", stdout), ("stderr", stderr),
                           ("output", output), ("output_truncated", truncated), ("files", changed),
                           ("files_truncated", changed_truncated)):
            if value:
                reply[key] = value
        if checkpoints is not None and checkpoints.warning:
            reply["checkpoint_warning"] = checkpoints.warning
        capture.send(reply)
        if checkpoints is not None:
            checkpoints.count_skipped(req.get("skipped"))  # calls through the supervisor that left none
            checkpoints.after_call({"kind": "run_code", "execution_count": cell.number, "code": req["code"][:300]})

    _serve(reader, run, checkpoint_requests(checkpoints, capture))

