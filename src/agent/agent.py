"""In-sandbox agent of the Code Interpreter Wrapper (standard library only).

Runs *inside* the isolation boundary, in one of three roles chosen by argv:

  agent.py                       the supervisor (ciw_main.py, ciw_supervisor.py): speaks the wire protocol with the
                                 service on stdin/stdout, owns the kernels, runs shell commands, does all
                                 file I/O, enforces per-call timeouts and output caps.
  agent.py --kernel REQ REP      the Python kernel (ciw_kernel.py): keeps the namespace between calls.
  agent.py --relay SOCKET PORT   the network relay (ciw_relay.py) of a sandbox with network.
  agent.py --serve SOCKET        the supervisor as a daemon on a Unix socket (AgentCube pods).
  agent.py --call SOCKET JSON    one request to that daemon (JSON, or @file holding it); prints the reply.
  agent.py --kernel-starts N --resume PID
                                 the supervisor again, exec'd by ciw-idle (ciw_idle.c) when a request comes
                                 to a sandbox whose supervisor hibernated; PID is its kernel (0: none).

Wire protocol (service <-> supervisor): a frame is one JSON line, followed by exactly `blob` raw bytes
when the header carries a positive "blob" field. Requests carry "id" and "op"; every reply repeats "id"
and has "ok". Frames with an "event" field (stdout/stderr chunks of a streamed call) may precede a reply.
The supervisor handles one request at a time.
"""
import sys

if __name__ == "__main__":
    # The supervisor runs with -I: no PYTHON* variable, user site or script directory on the path, so nothing
    # the sandbox's code can write or choose is ever imported by it. Its own modules come from here, read-only.
    import os.path
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

if __name__ == "__main__" and sys.argv[1:2] in ([], ["--kernel-starts"]):
    # The supervisor holds the service's channel: undumpable before anything else, so that code of the sandbox
    # (same uid) cannot open it through /proc. ciw-idle execs it again, and exec() made it dumpable.
    import ctypes
    ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0

if __name__ == "__main__":
    if sys.argv[1:2] == ["--kernel"]:
        from ciw_kernel import kernel_main
        kernel_main(int(sys.argv[2]), int(sys.argv[3]))
    elif sys.argv[1:2] == ["--relay"]:
        from ciw_relay import relay_main
        relay_main(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1:2] == ["--serve"]:
        from ciw_main import daemon_main
        daemon_main(sys.argv[2])
    elif sys.argv[1:2] == ["--call"]:
        from ciw_call import call_main
        sys.exit(call_main(sys.argv[2], sys.argv[3]))
    else:
        # ciw-idle execs the supervisor again as: agent.py --kernel-starts N --resume KERNEL_PID
        from ciw_main import supervisor_main
        args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
        resume = (int(args["--resume"]), int(args.get("--kernel-starts", 1))) if "--resume" in args else None
        supervisor_main(resume)
