"""The files of checkpoints (ciw_checkpoint.py): the workspace as a manifest, copies of its files in a store
in the sandbox's /tmp (its size limit applies), and putting the workspace back as a manifest has it.

STORE holds blobs named by their SHA-256 (a file that did not change is not copied again), a manifest per
distinct workspace state ({path: [kind, mtime_ns, size, mode, blob | link target]}), and the index of the
checkpoints, oldest first. Files over the size setting are listed in the manifest without content: a rollback
says it could not restore them. Code in the sandbox runs as the same user and can spoil the store: a rollback
then says which files it could not put back.
"""
import errno
import json
import os
import stat

from ciw_common import WORKSPACE

STORE = os.environ.get("CIW_CHECKPOINT_STORE", "/tmp/.ciw-checkpoints")
BLOBS = os.path.join(STORE, "blobs")
MANIFESTS = os.path.join(STORE, "manifests")
INDEX = os.path.join(STORE, "index.json")
MAX_ENTRIES = 20000  # files, directories and links a manifest holds; past it, the rest is not kept


class DiskFull(Exception):
    pass


def walk():
    """{path: [kind, mtime_ns, size, mode, None | link target]} of everything under the workspace (hidden
    files too): kind "f" file, "d" directory, "l" symlink (never followed); other kinds are left out. Also
    the directories walked, and whether MAX_ENTRIES cut it short."""
    entries, dirs, stack = {}, [], [WORKSPACE]
    while stack:
        path = stack.pop()
        try:
            it = os.scandir(path)
        except OSError:
            continue
        dirs.append(path)
        with it:
            for e in it:
                if len(entries) >= MAX_ENTRIES:
                    return entries, dirs, True
                try:
                    st = e.stat(follow_symlinks=False)
                    mode = stat.S_IMODE(st.st_mode)
                    if stat.S_ISDIR(st.st_mode):
                        entries[e.path] = ["d", 0, 0, mode, None]
                        stack.append(e.path)
                    elif stat.S_ISREG(st.st_mode):
                        entries[e.path] = ["f", st.st_mtime_ns, st.st_size, mode, None]
                    elif stat.S_ISLNK(st.st_mode):
                        entries[e.path] = ["l", 0, 0, 0, os.readlink(e.path)]
                except OSError:
                    continue
    return entries, dirs, False


def _same_file(a, b):
    return a is not None and b is not None and a[0] == b[0] == "f" and a[1] == b[1] and a[2] == b[2] and a[3] == b[3]


def _store_blob(path):
    """Copies a workspace file into the store under its SHA-256; the blob's name, and the bytes written (0
    when the store had it). None when the file is gone."""
    import hashlib
    tmp = os.path.join(BLOBS, ".tmp-%d" % os.getpid())
    digest = hashlib.sha256()
    try:
        src = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None, 0
    written = 0
    try:
        dst = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            while True:
                chunk = os.read(src, 1 << 20)
                if not chunk:
                    break
                digest.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(dst, view):]
                written += len(chunk)
        finally:
            os.close(dst)
    except OSError as exc:
        _unlink(tmp)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull() from exc
        return None, 0
    finally:
        os.close(src)
    name = digest.hexdigest()
    final = os.path.join(BLOBS, name)
    if os.path.exists(final):
        _unlink(tmp)
        return name, 0
    os.rename(tmp, final)
    return name, written


def _unlink(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def write_json(path, value):
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(value, f, separators=(",", ":"))
        os.rename(tmp, path)
    except OSError as exc:
        _unlink(tmp)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull() from exc
        raise


def write_bytes(path, data):
    """Replaces a file by rename, with no more than system calls (the kernel calls it right after a fork)."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.rename(tmp, path)


def load_index():
    """The index, with every entry a dict holding an int pid (code in the sandbox can write the file)."""
    try:
        with open(INDEX) as f:
            index = json.load(f)
    except (OSError, ValueError):
        index = None
    if not isinstance(index, dict) or not isinstance(index.get("entries"), list):
        return {"next": 1, "calls": 0, "entries": []}
    index["entries"] = [e for e in index["entries"] if isinstance(e, dict) and isinstance(e.get("pid"), int)]
    for key in ("next", "calls"):
        if not isinstance(index.get(key), int):
            index[key] = 1
    return index


def load_manifest(manifest_id):
    if not (isinstance(manifest_id, str) and manifest_id[:1] == "m" and manifest_id[1:].replace("-", "").isdigit()):
        raise ValueError("not a manifest id")
    with open(os.path.join(MANIFESTS, "%s.json" % manifest_id)) as f:
        return json.load(f)


class FileRecord:
    """The kernel's record of the workspace for checkpoints: the manifest of the last checkpoint, and an
    inotify watch of every directory, so that a call that touched no file costs no walk."""

    def __init__(self, max_file_bytes):
        from ciw_files import WorkspaceWatch
        self.max_file_bytes = max_file_bytes
        self.watch = WorkspaceWatch()
        self.entries = None
        self.manifest_id = None
        self.truncated = False
        self._not_kept = (None, [])

    def _info(self, written):
        """What keeping the manifest cost, and what it holds no content of (said by every checkpoint using it)."""
        info = {"bytes": written}
        if self._not_kept[0] is not self.entries:  # worked out once per manifest, not per call
            self._not_kept = (self.entries, sorted(p for p, e in (self.entries or {}).items() if e[0] == "f" and not e[4]))
        skipped = self._not_kept[1]
        if skipped:
            info["skipped"] = skipped[:100]
        if self.truncated:
            info["truncated"] = True
        return info

    def record(self, index, force=False):
        """The manifest id of the workspace now (a new one when it changed), and what keeping it cost:
        {"bytes": blob bytes written, "skipped": files over the size setting}."""
        if self.entries is None:
            self._seed(index)
            force = True  # this kernel's watch has seen nothing yet
        path_of = lambda m: os.path.join(MANIFESTS, m + ".json")  # noqa: E731
        if self.manifest_id is not None and not force and not self.watch.changed() and os.path.exists(path_of(self.manifest_id)):
            return self.manifest_id, self._info(0)
        self.watch.changed()
        now, dirs, truncated = walk()
        self.watch.watch(dirs)
        os.makedirs(BLOBS, exist_ok=True)
        os.makedirs(MANIFESTS, exist_ok=True)
        old = self.entries or {}
        written = 0
        for path, entry in now.items():
            if entry[0] != "f":
                continue
            before = old.get(path)
            if _same_file(before, entry) and before[4] and os.path.exists(os.path.join(BLOBS, before[4])):
                entry[4] = before[4]
            elif entry[2] <= self.max_file_bytes:
                entry[4], n = _store_blob(path)
                written += n
        if now == old and truncated == self.truncated and self.manifest_id is not None and os.path.exists(path_of(self.manifest_id)):
            return self.manifest_id, self._info(written)
        manifest_id = "m%d-%d" % (os.getpid(), index["next"])
        write_json(path_of(manifest_id), {"entries": now, "truncated": truncated})
        self.entries, self.manifest_id, self.truncated = now, manifest_id, truncated
        return manifest_id, self._info(written)

    def _seed(self, index):
        """A kernel that starts beside earlier checkpoints (a restart) begins from the newest manifest: files
        that did not change since are not read again."""
        self.entries = {}
        for entry in reversed(index["entries"]):
            try:
                self.entries = load_manifest(entry["manifest"])["entries"]
                self.manifest_id = entry["manifest"]
                return
            except (OSError, ValueError, KeyError, TypeError):
                continue


def collect_garbage(index):
    """Removes the manifests and blobs no checkpoint of `index` refers to."""
    live = {e.get("manifest") for e in index["entries"]}
    blobs = set()
    for manifest_id in live:
        try:
            for entry in load_manifest(manifest_id)["entries"].values():
                if entry[0] == "f" and entry[4]:
                    blobs.add(entry[4])
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            continue
    for directory, keep, suffix in ((MANIFESTS, live, ".json"), (BLOBS, blobs, "")):
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in names:
            key = name[: -len(suffix)] if suffix and name.endswith(suffix) else name
            if key not in keep and not name.startswith(".tmp"):
                _unlink(os.path.join(directory, name))


def checked_manifest(manifest):
    """A manifest's entries, each checked: it comes from the sandbox's /tmp, which code in the sandbox can write.
    Entries outside the workspace or of the wrong shape are refused."""
    entries = manifest.get("entries") if isinstance(manifest, dict) else None
    if not isinstance(entries, dict):
        raise ValueError("not a manifest")
    top = WORKSPACE + os.sep
    for path, e in entries.items():
        if not (path.startswith(top) and os.path.normpath(path) == path and isinstance(e, list) and len(e) == 5
                and e[0] in ("f", "d", "l") and all(isinstance(x, int) for x in e[1:4])
                and (e[4] is None or isinstance(e[4], str)) and (e[0] != "l" or isinstance(e[4], str))
                and (e[0] != "f" or e[4] is None or (len(e[4]) == 64 and all(c in "0123456789abcdef" for c in e[4])))):
            raise ValueError("a damaged entry")
    return entries, manifest.get("truncated") is True


def restore_files(wanted, truncated=False):
    """Puts the workspace back as a manifest's entries (checked_manifest) have it: what is not in it is removed,
    what changed is copied back from its blob (with its mode and mtime). Returns what it did."""
    import shutil
    now, _, _ = walk()
    removed, restored, missing, skipped = [], [], [], []
    depth = lambda p: p.count("/")  # noqa: E731
    gone = set()  # directories removed whole: what was in them is not named again
    for path in sorted(now, key=depth):
        have, want = now[path], wanted.get(path)
        if os.path.dirname(path) in gone:
            gone.add(path)
            continue
        if want is not None and want[0] == have[0] and (have[0] != "l" or want[4] == have[4]):
            continue
        if want is not None and want[0] == "f" and have[0] == "f":
            continue  # rewritten below in place of the old
        try:
            if have[0] == "d":
                shutil.rmtree(path)
                gone.add(path)
            else:
                os.unlink(path)
            if want is None:
                removed.append(path)
        except FileNotFoundError:
            pass
    for path in sorted(wanted, key=depth):
        want, have = wanted[path], now.get(path)
        kind = want[0]
        try:
            if kind == "d":
                if have is None or have[0] != "d":
                    os.mkdir(path, want[3] or 0o755)
                if have is None or have[3] != want[3]:
                    os.chmod(path, want[3])
            elif kind == "l":
                if have is None or have[0] != "l" or have[4] != want[4]:
                    os.symlink(want[4], path)
                    restored.append(path)
            elif kind == "f":
                if _same_file(have, want):
                    continue
                if not want[4]:
                    skipped.append(path)
                    continue
                blob = os.path.join(BLOBS, want[4])
                tmp = os.path.join(os.path.dirname(path), ".ciw-restore-%d" % os.getpid())
                try:
                    shutil.copyfile(blob, tmp)
                except FileNotFoundError:
                    missing.append(path)
                    continue
                os.chmod(tmp, want[3])
                os.utime(tmp, ns=(want[1], want[1]))
                os.replace(tmp, path)
                restored.append(path)
        except OSError:
            missing.append(path)
    # Directories' mtimes are not kept: they change with every file put back.
    report = {"restored": restored, "removed": removed}
    if skipped:
        report["not_restored"] = skipped
    if missing:
        report["missing"] = missing
    if truncated:
        report["truncated"] = True
    return report
