"""The supervisor's ops for what runs beside calls (background processes, file watches) and for file moves:
mkdir, move, remove. Each op takes the supervisor, the request and its payload, like the others in OPS."""
from ciw_files import make_dir, move, remove


def background(sup):
    """The process and watch tables, made on first use (with the lock their threads send frames under)."""
    if sup.procs is None:
        import threading
        from ciw_procs import Procs, Watches
        sup.send_lock = threading.Lock()
        sup.procs = Procs(sup)
        sup.watches = Watches(sup)
    return sup.procs, sup.watches


def op_mkdir(_sup, req, _blob):
    return make_dir(req["path"]), b""


def op_move(_sup, req, _blob):
    return move(req["source"], req["destination"]), b""


def op_remove(_sup, req, _blob):
    return remove(req["path"]), b""


def op_proc(sup, req, blob):
    procs, _ = background(sup)
    op = req["op"]
    if op == "proc_start":
        return procs.start(req), b""
    if op == "proc_input":
        data = b"".join(bytes(c) for c in blob.chunks()) if blob else b""
        return procs.input(req["pid"], data), b""
    if op == "proc_close_stdin":
        return procs.close_stdin(req["pid"]), b""
    if op == "proc_signal":
        return procs.signal(req["pid"], req["signal"]), b""
    if op == "proc_resize":
        return procs.resize(req["pid"], req["cols"], req["rows"]), b""
    return procs.listing(), b""


def op_watch(sup, req, _blob):
    _, watches = background(sup)
    if req["op"] == "watch_start":
        return watches.start(req["path"], bool(req.get("recursive"))), b""
    return watches.stop(req["watch_id"]), b""


OPS = {
    "mkdir": op_mkdir,
    "move": op_move,
    "remove": op_remove,
    "proc_start": op_proc,
    "proc_input": op_proc,
    "proc_close_stdin": op_proc,
    "proc_signal": op_proc,
    "proc_resize": op_proc,
    "proc_list": op_proc,
    "watch_start": op_watch,
    "watch_stop": op_watch,
}
