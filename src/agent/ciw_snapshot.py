"""A sandbox's snapshot, for pausing it: one tar (PAX) of the workspace and the kernels' saved state, made and
unpacked here, inside the sandbox, so that whatever the workspace holds — symlinks to anywhere, odd names —
can only ever touch this sandbox. Symlinks are stored and restored as links, never followed; modes and
modification times are kept. The service stores the bytes and never reads them."""
import errno
import os
import stat

from ciw_common import WORKSPACE, AgentError
from ciw_files import OpenFile, snapshot

# The kernels' saved state (ciw_state.py, the JavaScript kernel) lives here between save and snapshot.
STATE_DIR = "/tmp/.ciw-state"
_TMP_TAR = "/tmp/.ciw-snapshot.tar"
_ROOTS = {"workspace": WORKSPACE, "state": STATE_DIR}


def state_dir():
    """The kernels' state directory, empty."""
    if os.path.isdir(STATE_DIR) and not os.path.islink(STATE_DIR):
        for name in os.listdir(STATE_DIR):
            os.unlink(os.path.join(STATE_DIR, name))
    else:
        if os.path.lexists(STATE_DIR):
            os.unlink(STATE_DIR)
        os.mkdir(STATE_DIR, 0o700)
    return STATE_DIR


def pack():
    """The snapshot as an OpenFile (sent with sendfile, then gone): a tar written to /tmp first, so that its
    length is known before the reply's header is sent."""
    import tarfile  # here, not at the top: ≈ 9 ms of imports the supervisor would pay at every start and wake-up
    try:
        with tarfile.open(_TMP_TAR, "w", format=tarfile.PAX_FORMAT) as tar:
            tar.add(WORKSPACE, arcname="workspace", recursive=True)
            if os.path.isdir(STATE_DIR):
                tar.add(STATE_DIR, arcname="state", recursive=True)
        fd = os.open(_TMP_TAR, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        _remove(_TMP_TAR)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.ENOMEM):
            raise AgentError("DISK_QUOTA_EXCEEDED", "no room in the sandbox's /tmp to write its snapshot (%s)" % exc.strerror)
        raise AgentError("FILE_IO_FAILED", "could not write the snapshot: %s" % exc)
    os.unlink(_TMP_TAR)  # the open descriptor keeps the bytes until they are sent
    return OpenFile(fd, os.fstat(fd).st_size)


class _ChunkFile:
    """A read()-able file over a payload's chunks (which reuse one buffer: each is copied as it is taken)."""

    def __init__(self, chunks):
        self.chunks = iter(chunks)
        self.buf = b""

    def read(self, n=-1):
        while n < 0 or len(self.buf) < n:
            chunk = next(self.chunks, None)
            if chunk is None:
                break
            self.buf += bytes(chunk)
        if n < 0:
            data, self.buf = self.buf, b""
        else:
            data, self.buf = self.buf[:n], self.buf[n:]
        return data


def _target(name):
    """Where a member goes: under the workspace or the state directory, or None when it would leave them."""
    parts = name.split("/")
    root = _ROOTS.get(parts[0])
    if root is None or any(p in ("", ".", "..") for p in parts[1:]) or name.startswith("/"):
        return None
    return os.path.join(root, *parts[1:])


def _inside(path, root):
    parent = os.path.realpath(os.path.dirname(path))
    return parent == root or parent.startswith(root + "/")


def unpack(chunks):
    """Restores a snapshot made by pack() from the payload's chunks into an empty workspace and state
    directory. Returns {"files": n, "skipped": [names]}: members that would leave them are skipped."""
    import tarfile  # see pack()
    state_dir()
    files, skipped, dirs = 0, [], []
    try:
        with tarfile.open(fileobj=_ChunkFile(chunks), mode="r|") as tar:
            for member in tar:
                path = _target(member.name)
                root = _ROOTS.get(member.name.split("/")[0])
                if path is None:
                    if member.name not in _ROOTS:
                        skipped.append(member.name)
                    continue
                if path != root and not _inside(path, root):
                    skipped.append(member.name)
                    continue
                if member.isdir():
                    os.makedirs(path, exist_ok=True)
                    dirs.append((path, member))
                    continue
                if os.path.lexists(path) and not os.path.isdir(path):
                    os.unlink(path)
                if member.isreg():
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
                    with os.fdopen(fd, "wb") as out, tar.extractfile(member) as src:
                        while True:
                            data = src.read(1 << 20)
                            if not data:
                                break
                            out.write(data)
                    os.chmod(path, stat.S_IMODE(member.mode))
                elif member.issym():
                    os.symlink(member.linkname, path)
                elif member.islnk():
                    source = _target(member.linkname)
                    if source is None or not os.path.isfile(source):
                        skipped.append(member.name)
                        continue
                    os.link(source, path, follow_symlinks=False)
                elif member.isfifo():
                    os.mkfifo(path, stat.S_IMODE(member.mode))
                else:
                    skipped.append(member.name)
                    continue
                os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)
                files += 1
    except (tarfile.TarError, EOFError) as exc:
        raise AgentError("STATE_CORRUPT", "the stored snapshot is damaged (%s)" % exc)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise AgentError("DISK_QUOTA_EXCEEDED", "the snapshot does not fit in this sandbox's disk (%s)" % exc.strerror)
        raise
    for path, member in reversed(dirs):  # modes last: a read-only directory is filled first
        os.chmod(path, stat.S_IMODE(member.mode))
        os.utime(path, (member.mtime, member.mtime))
    return {"files": files, "skipped": skipped}


def _remove(path):
    try:
        os.unlink(path)
    except OSError:
        pass


# The supervisor's ops for a pause (OPS in ciw_supervisor.py); `self` is the Supervisor.


def op_state(self, req, _blob):
    """The kernels' saved state, for a pause: "clear" empties its directory (first), "save" and "load"
    save or load the state of a kernel this process runs — the JavaScript kernel, or Python where it has
    no direct channel ({"state": null} when that kernel is not running, or has nothing to load)."""
    if req["action"] == "clear":
        return {"state_dir": state_dir()}, b""
    language = req.get("language") or "python"
    kernel = self.kernels.get(language)
    if kernel is None:
        raise AgentError("UNSUPPORTED_LANGUAGE", "no %s kernel to save or load here" % language)
    path = os.path.join(STATE_DIR, "python.pkl" if language == "python" else "javascript.json")
    if req["action"] == "save" and (kernel.proc is None or kernel.proc.poll() is not None):
        return {"state": None}, b""
    if req["action"] == "load" and not os.path.exists(path + (".json" if language == "python" else "")):
        return {"state": None}, b""
    return {"state": kernel.state(req["action"], path)}, b""


def op_snapshot(self, _req, _blob):
    """The workspace and the kernels' saved state as one tar: the sandbox is being paused."""
    opened = pack()
    return {"size": opened.size}, opened


def op_restore(self, _req, blob):
    """Unpacks a snapshot into this (new, empty) sandbox; the kernels' state is loaded by op_state."""
    if blob is None:
        raise AgentError("VALIDATION_FAILED", "restore needs the snapshot as its payload")
    restored = unpack(blob.chunks())
    self.files = snapshot()  # restored files are not artifacts of the next call
    restored["state"] = sorted(os.listdir(STATE_DIR))
    return restored, b""
