"""A kernel's state on disk, for pausing a sandbox: the user's global variables, pickled here, inside the
sandbox (the service never unpickles anything: unpickling runs code), and the imports to replay.

The namespace is the dict of a real `__main__` module (ciw_kernel.main_namespace), so that dill — Debian's
python3-dill, when installed — saves functions, lambdas and classes defined in cells by value, and restores
them bound to the new namespace. Without dill, plain pickle saves what it can. Saved variables are pickled
together, so two names for one object stay one object. What cannot be saved is listed with the reason."""
import importlib
import io
import json
import os
import pickle
import select
import socket
import sys
import types

# Names the kernel itself puts in the namespace: never saved, never listed.
_OWN = frozenset(("__builtins__", "__name__", "__doc__", "__package__", "__loader__", "__spec__", "display"))
_REASON_MAX = 200


def _engine():
    try:
        import dill
    except ImportError:
        return "pickle", pickle
    dill.settings["recurse"] = False  # functions keep the namespace itself as their globals
    return "dill", dill


# What must not be saved even where dill can: it would come back as something else — dill reopens a file by
# its name and mode, so a file opened for writing would be truncated on resume — or not at all.
_LIVE = (io.IOBase, socket.socket, select.epoll if hasattr(select, "epoll") else io.IOBase)


def _pickler(engine):
    class Pickler(engine.Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, _LIVE):
                raise TypeError("%s is live (an open file or socket): open it again after the resume" % type(obj).__name__)
            return NotImplemented

    return Pickler


class _Discard:
    """A file that keeps nothing: pickling into it tells whether a value can be pickled."""

    def write(self, data):
        return len(data)


def _reason(exc):
    text = "%s: %s" % (type(exc).__name__, exc)
    return text if len(text) <= _REASON_MAX else text[:_REASON_MAX] + "…"


def save(ns, path):
    """Writes the namespace's variables to `path` (pickle) and `path`.json (the rest). Returns the report."""
    name, engine = _engine()
    pickler = _pickler(engine)
    imports, values, skipped = [], {}, []
    for key, value in list(ns.items()):
        if key in _OWN or not isinstance(key, str):
            continue
        if isinstance(value, types.ModuleType):
            imports.append([key, value.__name__])
            continue
        try:
            pickler(_Discard(), protocol=pickle.HIGHEST_PROTOCOL).dump(value)
            values[key] = value
        except BaseException as exc:  # noqa: BLE001 - any object may refuse, in any way
            skipped.append({"name": key, "reason": _reason(exc)})
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            pickler(f, protocol=pickle.HIGHEST_PROTOCOL).dump(values)
    except BaseException as exc:  # noqa: BLE001 - saved one by one, they may still fail together
        skipped.extend({"name": key, "reason": _reason(exc)} for key in values)
        values = {}
        with open(tmp, "wb") as f:
            pickler(f, protocol=pickle.HIGHEST_PROTOCOL).dump(values)
    os.replace(tmp, path)
    meta = {"engine": name, "imports": imports, "saved": sorted(values), "skipped": skipped,
            "python": "%d.%d" % sys.version_info[:2]}
    with open(path + ".json", "w") as f:
        json.dump(meta, f)
    return {"saved": meta["saved"] + [alias for alias, _ in imports], "skipped": skipped, "engine": name}


def load(ns, path):
    """Replays the imports and loads the variables saved by save() into `ns`. Returns the report."""
    with open(path + ".json") as f:
        meta = json.load(f)
    restored, skipped = [], list(meta.get("skipped") or [])
    for alias, module in meta.get("imports") or []:
        try:
            ns[alias] = importlib.import_module(module)
            restored.append(alias)
        except BaseException as exc:  # noqa: BLE001 - a module that no longer imports
            skipped.append({"name": alias, "reason": "import %s failed: %s" % (module, _reason(exc))})
    saved = meta.get("saved") or []
    if saved:
        name, engine = _engine()
        if meta.get("engine") == "dill" and name != "dill":
            skipped.extend({"name": key, "reason": "saved with dill, which this sandbox does not have"} for key in saved)
        else:
            try:
                with open(path, "rb") as f:
                    values = engine.Unpickler(f).load()
                ns.update(values)
                restored.extend(values)
            except BaseException as exc:  # noqa: BLE001 - a class that no longer exists, a corrupt file
                skipped.extend({"name": key, "reason": "could not be loaded: %s" % _reason(exc)} for key in saved)
    return {"restored": sorted(restored), "skipped": skipped}
