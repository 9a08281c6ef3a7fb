"""Code contexts: more interpreters in one sandbox beside the default Python and JavaScript ones, each with its
own variables and working directory (E2B's contexts). They run behind the supervisor like its own kernels: a
Python context is forked from it, a JavaScript one is a Node process; they live until removed or the sandbox
stops, and are not kept across a pause (the service says so)."""
import json
import os

from ciw_common import WORKSPACE, AgentError
from ciw_process import Kernel, exec_js_kernel, fork_python_kernel

MAX_CONTEXTS = 8
_CHDIR = {"python": "import os as _ciw_os; _ciw_os.chdir(%s); del _ciw_os",
          "javascript": "process.chdir(%s); undefined"}


class Context:
    def __init__(self, cid, language, cwd, kernel):
        self.id = cid
        self.language = language
        self.cwd = cwd
        self.kernel = kernel


def op_context(sup, req, _blob):
    op = req["op"]
    if op == "context_create":
        if len(sup.contexts) >= MAX_CONTEXTS:
            raise AgentError("CONTEXT_LIMIT_REACHED", "this sandbox already has %d contexts; remove one first" % MAX_CONTEXTS)
        language = req.get("language") or "python"
        if language not in _CHDIR:
            raise AgentError("UNSUPPORTED_LANGUAGE", "no kernel for language %r" % language)
        cwd = req.get("cwd") or WORKSPACE
        cwd = cwd if os.path.isabs(cwd) else os.path.join(WORKSPACE, cwd)
        if not os.path.isdir(cwd):
            raise AgentError("BAD_CWD", "the context's working directory %s is not a directory" % cwd)
        if language == "python":
            kernel = Kernel("Python", fork_python_kernel, sup.python_env, sup.cpu_limit_s)
        elif not any(os.access(os.path.join(d, "node"), os.X_OK) for d in sup.env.get("PATH", "").split(os.pathsep) if d):
            raise AgentError("UNSUPPORTED_LANGUAGE", "JavaScript needs Node.js under /usr on the host; it is not installed there")
        else:
            kernel = Kernel("JavaScript", exec_js_kernel, sup.env, sup.cpu_limit_s)
        sup.contexts[req["context"]] = Context(req["context"], language, cwd, kernel)
        return {"id": req["context"], "language": language, "cwd": cwd}, b""
    context = _get(sup, req["context"])
    if op == "context_restart":
        context.kernel.stop()  # the next call starts a new interpreter, in the context's directory
        return {"id": context.id}, b""
    context.kernel.stop()
    del sup.contexts[context.id]
    return {"id": context.id}, b""


def _get(sup, cid):
    context = sup.contexts.get(cid)
    if context is None:
        raise AgentError("CONTEXT_NOT_FOUND", "no context %r in this sandbox" % cid)
    return context


def execute(sup, req):
    """Runs code in a context (op exec with a "context"), starting its interpreter in its directory first."""
    context = _get(sup, req["context"])
    if req.get("language") and req["language"] != context.language:
        raise AgentError("VALIDATION_FAILED", "context %r runs %s, not %s" % (context.id, context.language, req["language"]))
    capture = sup.capture(req)
    kernel = context.kernel
    if kernel.proc is None or kernel.proc.poll() is not None:
        kernel.stop()
        try:
            kernel.start()
        except OSError as exc:
            raise AgentError("PROCESS_LIMIT_REACHED", "the context's interpreter could not start: the sandbox's process "
                             "limit is reached (%s)" % exc)
        except RuntimeError as exc:
            raise AgentError("KERNEL_START_FAILED", "the context's interpreter did not start: %s" % exc)
        quiet = sup.capture({})
        kernel.execute(_CHDIR[context.language] % json.dumps(context.cwd), 10, sup.grace_s, quiet)
    res = kernel.execute(req["code"], req["timeout_ms"] / 1000, sup.grace_s, capture, req.get("inline_images"),
                         req.get("env"))
    return sup.finish(res, capture), b""
