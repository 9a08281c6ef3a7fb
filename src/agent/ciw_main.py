"""How the supervisor process starts: on the service's pipes (local backend; also again after ciw-idle) or as
a daemon on a Unix socket (AgentCube pods), after setting up the process (undumpable, rlimits, workspace)."""
import json
import os
import resource
import signal

from ciw_common import WORKSPACE, LineReader
from ciw_process import prepare_site
from ciw_supervisor import Supervisor


def _make_undumpable():
    """PR_SET_DUMPABLE 0: code running as the same uid in this sandbox can then neither ptrace the
    supervisor nor open /proc/<pid>/fd/* to write forged frames on the service's pipe."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def apply_rlimits(limits):
    """Limits every process of the sandbox inherits: no core dumps, and whatever the service asks for
    (address-space data, process count) — the fallback where cgroups are not available."""
    names = {"core": resource.RLIMIT_CORE, "data": resource.RLIMIT_DATA, "nproc": resource.RLIMIT_NPROC,
             "cpu": resource.RLIMIT_CPU}
    for key, value in dict({"core": 0}, **limits).items():
        if key in names and value is not None:
            resource.setrlimit(names[key], (int(value), int(value)))


def _setup():
    _make_undumpable()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    os.makedirs(WORKSPACE, exist_ok=True)
    os.chdir(WORKSPACE)
    apply_rlimits(json.loads(os.environ.get("CIW_RLIMITS", "{}")))


def _yield_to_service():
    """SCHED_BATCH for this process and everything it starts (local backend, where sandboxes share the CPUs
    with the service): a sandbox's process woken by the service's request no longer preempts the service on
    the spot, so the service answers every request that is ready before the sandboxes run (at 16 busy
    sandboxes on two cores, ~15 % more calls per second; docs/performance.md). Sandboxes still get their
    CPU share at every tick; code may switch itself back to SCHED_OTHER, which only affects its own wake-ups."""
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):
        pass


def supervisor_main(resume=None):
    """The sandbox's agent, on the service's channel (local backend). `resume`: (kernel pid, kernel
    starts) when it comes back from ciw-idle, with the request that woke it still unread."""
    _setup()
    _yield_to_service()
    supervisor = Supervisor(os.fdopen(1, "wb", buffering=0), resume)
    reader = LineReader(os.fdopen(0, "rb", buffering=0))
    if supervisor.direct is not None:
        supervisor.wake_r, wake_w = os.pipe()
        os.set_blocking(supervisor.wake_r, False)
        os.set_blocking(wake_w, False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(wake_w)
        reader.before_read = lambda: reader.buf or supervisor.watch_children()
        supervisor.reap()  # what ended while it was ciw-idle, or before the handler was set
    supervisor.serve(reader, announce=resume is None)
    for kernel in supervisor.all_kernels():
        kernel.stop()


def daemon_main(socket_path):
    """The agent as a daemon on a Unix socket, one connection at a time (AgentCube pods: PicoD runs each
    command to completion, so the stateful agent lives beside it, detached, and `--call` talks to it)."""
    import socket
    _setup()
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        os.unlink(socket_path)
    except FileNotFoundError:
        pass
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(socket_path)
    os.chmod(socket_path, 0o600)
    server.listen(8)
    supervisor = None
    while True:
        conn, _ = server.accept()
        with conn:
            out = conn.makefile("wb", buffering=0)
            if supervisor is None:
                supervisor = Supervisor(out)
                prepare_site()
            supervisor.out = out
            try:
                supervisor.serve(LineReader(conn.makefile("rb", buffering=0)), announce=False)
            except OSError:
                pass  # the caller went away
