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


def _dill():
    """dill, when installed (imported only when plain pickle is not enough: it takes tens of milliseconds)."""
    try:
        import dill
    except ImportError:
        return None
    dill.settings["recurse"] = False  # functions keep the namespace itself as their globals
    return dill


class _ByName(Exception):
    """Plain pickle would save a function or class of the cells by its name alone, which a new kernel lacks."""


# What must not be saved even where dill can: it would come back as something else — dill reopens a file by
# its name and mode, so a file opened for writing would be truncated on resume — or not at all.
_LIVE = (io.IOBase, socket.socket, select.epoll if hasattr(select, "epoll") else io.IOBase)


def _pickler(engine):
    plain = engine is pickle

    class Pickler(engine.Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, _LIVE):
                raise TypeError("%s is live (an open file or socket): open it again after the resume" % type(obj).__name__)
            if plain and isinstance(obj, (type, types.FunctionType)) and getattr(obj, "__module__", None) == "__main__":
                raise _ByName(obj)
            return NotImplemented

    return Pickler


def _fits(pickler, value):
    """None when `value` pickles with `pickler`, else the exception."""
    try:
        pickler(_Discard(), protocol=pickle.HIGHEST_PROTOCOL).dump(value)
        return None
    except BaseException as exc:  # noqa: BLE001 - any object may refuse, in any way
        return exc


class _Discard:
    """A file that keeps nothing: pickling into it tells whether a value can be pickled."""

    def write(self, data):
        return len(data)


def _reason(exc):
    text = "%s: %s" % (type(exc).__name__, exc)
    return text if len(text) <= _REASON_MAX else text[:_REASON_MAX] + "…"


def save(ns, path):
    """Writes the namespace's variables to `path` (pickle) and `path`.json (the rest). Returns the report.
    Plain pickle when it can save them all (its load is the fastest); dill for all of them when some need it
    (functions and classes of the cells, lambdas)."""
    plain = _pickler(pickle)
    dill = None
    imports, values, skipped, refused = [], {}, [], {}
    for key, value in list(ns.items()):
        if key in _OWN or not isinstance(key, str):
            continue
        if isinstance(value, types.ModuleType):
            imports.append([key, value.__name__])
            continue
        problem = _fits(plain, value)
        if problem is None:
            values[key] = value
        else:
            refused[key] = (value, problem)
    name, pickler = "pickle", plain
    if refused:
        dill = _dill()
        if dill is not None:
            with_dill = _pickler(dill)
            for key, (value, _) in list(refused.items()):
                if _fits(with_dill, value) is None:
                    values[key] = value
                    del refused[key]
                    name, pickler = "dill", with_dill
    for key, (_, problem) in refused.items():
        reason = "defined in a cell, and dill (python3-dill) is not installed" if isinstance(problem, _ByName) else _reason(problem)
        skipped.append({"name": key, "reason": reason})
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
        engine = _dill() if meta.get("engine") == "dill" else pickle
        if engine is None:
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
