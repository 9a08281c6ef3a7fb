"""File operations, done inside the sandbox so that no path or planted symlink leads outside /workspace."""
import errno
import os
import stat

from ciw_common import WORKSPACE, AgentError

def resolve(path, must_exist=True):
    """Map a user path to a real path inside the workspace; refuse anything that lands outside."""
    if not isinstance(path, str) or path == "" or "\0" in path:
        raise AgentError("BAD_PATH", "path must be a non-empty string without NUL bytes")
    full = os.path.normpath(os.path.join(WORKSPACE, path))
    try:
        real = os.path.realpath(full)
    except OSError as exc:  # a symlink swapped while it was being followed (EINVAL, ELOOP…)
        raise _os_error(exc, full) from None
    root = os.path.realpath(WORKSPACE)
    if real != root and not real.startswith(root + os.sep):
        raise AgentError("PATH_OUTSIDE_WORKSPACE",
                         "path %r resolves outside the workspace %s" % (path[:200], WORKSPACE))
    if must_exist and not os.path.lexists(real):
        raise AgentError("FILE_NOT_FOUND", "no such file or directory in the sandbox: %s" % full)
    return real


def _os_error(exc, path):
    if exc.errno == errno.ENOSPC or exc.errno == errno.EDQUOT:
        return AgentError("DISK_QUOTA_EXCEEDED", "the sandbox workspace is full while writing %s" % path)
    if exc.errno == errno.EISDIR:
        return AgentError("IS_A_DIRECTORY", "%s is a directory, not a file" % path)
    if exc.errno == errno.ENOENT:
        return AgentError("FILE_NOT_FOUND", "no such file or directory in the sandbox: %s" % path)
    if exc.errno == errno.ENOTDIR:
        return AgentError("NOT_A_DIRECTORY", "a component of %s is not a directory" % path)
    if exc.errno == errno.ENXIO:
        return AgentError("NOT_A_REGULAR_FILE", "%s is not a regular file (a FIFO with nobody reading it)" % path)
    if exc.errno == errno.ENAMETOOLONG:
        return AgentError("BAD_PATH", "the path or one of its names is too long: %s" % path[:200])
    if exc.errno in (errno.ELOOP, errno.EACCES, errno.EPERM):
        return AgentError("PATH_OUTSIDE_WORKSPACE", "%s cannot be accessed (%s)" % (path, exc.strerror))
    if exc.errno == errno.EINVAL:
        return AgentError("FILE_IO_FAILED", "%s changed while it was being opened (a symlink replaced?); try again" % path[:500])
    return AgentError("FILE_IO_FAILED", "%s: %s" % (path[:500], exc.strerror))


def write_file(path, chunks, append=False):
    """Writes the byte chunks (an iterable) to `path` in the workspace, creating its directories."""
    real = resolve(path, must_exist=False)
    if os.path.isdir(real):
        raise AgentError("IS_A_DIRECTORY", "%s is a directory, not a file" % real)
    try:
        os.makedirs(os.path.dirname(real), exist_ok=True)
        # O_NONBLOCK: writing to a FIFO planted there fails at once (ENXIO) instead of waiting for a reader.
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | (os.O_APPEND if append else os.O_TRUNC)
        fd = os.open(real, flags, 0o644)
        with os.fdopen(fd, "wb", buffering=0) as f:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    view = view[f.write(view):]
    except OSError as exc:
        raise _os_error(exc, real)
    return {"path": real, "size": os.stat(real).st_size}


class OpenFile:
    """A regular file opened for reading, sent as a frame's payload straight from the file (sendfile)."""

    def __init__(self, fd, size):
        self.fd = fd
        self.size = size

    def send_to(self, out_fd):
        """Sends exactly `size` bytes: zeros stand in for what a shrinking file no longer has, so the
        stream stays in step with the header already sent (the service checks nothing more)."""
        sent = 0
        try:
            while sent < self.size:
                try:
                    n = os.sendfile(out_fd, self.fd, sent, self.size - sent)
                except OSError as exc:
                    if exc.errno not in (errno.EINVAL, errno.ENOSYS):
                        raise
                    n = _copy_some(self.fd, out_fd, sent, self.size - sent)
                if n == 0:
                    break
                sent += n
            while sent < self.size:
                pad = min(self.size - sent, 1 << 20)
                sent += os.write(out_fd, bytes(pad))
        finally:
            os.close(self.fd)


def _copy_some(src, dst, offset, count):
    data = os.pread(src, min(count, 1 << 20), offset)
    view = memoryview(data)
    while view:
        view = view[os.write(dst, view):]
    return len(data)


def open_file(path, max_bytes):
    """Opens a regular file of at most max_bytes in the workspace for reading: (real path, OpenFile)."""
    real = resolve(path)
    try:
        # O_NONBLOCK: a FIFO planted in the workspace must not hang the agent in open() (it is refused below).
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise _os_error(exc, real)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise AgentError("IS_A_DIRECTORY", "%s is a directory, not a file" % real)
        if not stat.S_ISREG(st.st_mode):
            raise AgentError("NOT_A_REGULAR_FILE", "%s is not a regular file" % real)
        if st.st_size > max_bytes:
            raise AgentError("FILE_TOO_LARGE", "%s is %d bytes, more than the %d-byte limit"
                             % (real, st.st_size, max_bytes))
    except BaseException:
        os.close(fd)
        raise
    return real, OpenFile(fd, st.st_size)


_NAMES = {}


def _name_of(kind, num):
    """A uid's or gid's name in the sandbox (its number when it has none), remembered."""
    key = (kind, num)
    if key not in _NAMES:
        try:
            if kind == "user":
                import pwd
                _NAMES[key] = pwd.getpwuid(num).pw_name
            else:
                import grp
                _NAMES[key] = grp.getgrgid(num).gr_name
        except (KeyError, ImportError):
            _NAMES[key] = str(num)
    return _NAMES[key]


def _entry(real, name):
    st = os.lstat(real)
    kind = "directory" if stat.S_ISDIR(st.st_mode) else "symlink" if stat.S_ISLNK(st.st_mode) \
        else "file" if stat.S_ISREG(st.st_mode) else "other"
    entry = {"name": name, "path": real, "type": kind, "size": st.st_size, "modified_ms": int(st.st_mtime * 1000),
             "mode": stat.S_IMODE(st.st_mode), "permissions": stat.filemode(st.st_mode),
             "owner": _name_of("user", st.st_uid), "group": _name_of("group", st.st_gid)}
    if kind == "symlink":
        try:
            entry["symlink_target"] = os.readlink(real)  # data: shown, never followed by the service
        except OSError:
            pass
    return entry


def make_dir(path):
    """Creates a directory and its parents. Reply: the entry, and whether it was created (not there before)."""
    real = resolve(path, must_exist=False)
    existed = os.path.isdir(real)
    try:
        os.makedirs(real, exist_ok=True)
    except FileExistsError:
        raise AgentError("NOT_A_DIRECTORY", "%s exists and is not a directory" % real)
    except OSError as exc:
        raise _os_error(exc, real)
    return {"entry": _entry(real, os.path.basename(real)), "created": not existed}


def move(source, destination):
    """Renames a file or directory inside the workspace (a symlink is moved as itself, never followed)."""
    src = _lexical(source)
    dst = _lexical(destination)
    if not os.path.lexists(src):
        raise AgentError("FILE_NOT_FOUND", "no such file or directory in the sandbox: %s" % src)
    try:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.rename(src, dst)
    except OSError as exc:
        raise _os_error(exc, dst)
    return {"entry": _entry(dst, os.path.basename(dst))}


def remove(path):
    """Removes a file, a symlink (not what it points to) or a directory with everything in it."""
    target = _lexical(path)
    if target == os.path.realpath(WORKSPACE):
        raise AgentError("VALIDATION_FAILED", "the workspace itself cannot be removed; remove what is in it")
    if not os.path.lexists(target):
        raise AgentError("FILE_NOT_FOUND", "no such file or directory in the sandbox: %s" % target)
    try:
        if os.path.isdir(target) and not os.path.islink(target):
            import shutil
            shutil.rmtree(target)
        else:
            os.unlink(target)
    except OSError as exc:
        raise _os_error(exc, target)
    return {"path": target}


def _lexical(path):
    """The path itself inside the workspace, its last name not followed (moving or removing a symlink acts on
    the link); its directory must resolve inside the workspace."""
    if not isinstance(path, str) or path == "" or "\0" in path:
        raise AgentError("BAD_PATH", "path must be a non-empty string without NUL bytes")
    full = os.path.normpath(os.path.join(WORKSPACE, path))
    if full == os.path.normpath(WORKSPACE):
        return os.path.realpath(WORKSPACE)
    parent = resolve(os.path.dirname(full), must_exist=False)
    return os.path.join(parent, os.path.basename(full))


def stat_path(path, follow=True):
    """What `path` leads to, or (follow=False) the entry itself: a symlink described, with what it holds."""
    real = resolve(path) if follow else _lexical(path)
    if not os.path.lexists(real):
        raise AgentError("FILE_NOT_FOUND", "no such file or directory in the sandbox: %s" % real)
    return _entry(real, os.path.basename(real))


def list_dir(path, recursive, limit, depth=0):
    """Entries of a directory: one level, every level (`recursive`), or `depth` levels."""
    real = resolve(path)
    if not os.path.isdir(real):
        raise AgentError("NOT_A_DIRECTORY", "%s is not a directory" % real)
    entries = []
    truncated = False

    def unreadable(exc):
        if exc.filename == real:  # the directory asked for; one deeper down is listed without its contents
            raise AgentError("FILE_IO_FAILED", "%s cannot be listed (%s)" % (real, exc.strerror))

    for dirpath, dirnames, filenames in os.walk(real, onerror=unreadable):
        dirnames.sort()
        for name in dirnames + sorted(filenames):
            if len(entries) >= limit:
                truncated = True
                break
            entries.append(_entry(os.path.join(dirpath, name), name))
        if truncated or not recursive and not depth:
            break
        if depth and dirpath.count(os.sep) - real.count(os.sep) + 1 >= depth:
            dirnames[:] = []
    return {"path": real, "entries": entries, "truncated": truncated}


SNAPSHOT_LIMIT = 20000
ARTIFACTS_LIMIT = 100


def snapshot(dirs=None):
    """{path: (mtime_ns, size)} of the workspace's regular files, skipping hidden and cache directories
    (pip's ~/.local, __pycache__…), at most SNAPSHOT_LIMIT files. The directories walked are added to `dirs`
    when it is given (a list)."""
    files = {}
    stack = [WORKSPACE]
    while stack and len(files) < SNAPSHOT_LIMIT:
        path = stack.pop()
        try:
            entries = os.scandir(path)
        except OSError:
            continue
        if dirs is not None:
            dirs.append(path)
        with entries:
            for e in entries:
                if e.name.startswith(".") or e.name == "__pycache__":
                    continue
                try:
                    if e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
                    elif e.is_file(follow_symlinks=False):
                        st = e.stat(follow_symlinks=False)
                        files[e.path] = (st.st_mtime_ns, st.st_size)
                except OSError:
                    continue
    return files


def changed_files(before, after):
    """Files created or modified between two snapshots, as [{path, size}], and whether the list was cut."""
    changed = sorted(p for p, sig in after.items() if before.get(p) != sig)
    return [{"path": p, "size": after[p][1]} for p in changed[:ARTIFACTS_LIMIT]], len(changed) > ARTIFACTS_LIMIT


# inotify(7) event bits: whatever can change a file's contents, size, time or presence.
_IN_MODIFY, _IN_ATTRIB, _IN_CLOSE_WRITE = 0x2, 0x4, 0x8
_IN_MOVED_FROM, _IN_MOVED_TO, _IN_CREATE, _IN_DELETE = 0x40, 0x80, 0x100, 0x200
_IN_DELETE_SELF, _IN_MOVE_SELF, _IN_ONLYDIR, _IN_DONT_FOLLOW = 0x400, 0x800, 0x1000000, 0x2000000
_WATCH_MASK = (_IN_MODIFY | _IN_ATTRIB | _IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE
               | _IN_DELETE_SELF | _IN_MOVE_SELF | _IN_ONLYDIR | _IN_DONT_FOLLOW)


class WorkspaceWatch:
    """Whether the workspace may have changed since the last look, from inotify: a workspace nobody touched
    is not walked again (a walk per call costs milliseconds with thousands of files). Every directory a
    snapshot walked is watched; any event, a full event queue included, means "walk again". Without inotify,
    or out of watches, it always answers yes and every call walks, as before."""

    def __init__(self):
        self.fd = None
        try:
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        except (OSError, AttributeError):
            return
        if fd >= 0:
            self.libc, self.fd = libc, fd

    def changed(self):
        """True if something may have changed since the last call; consumes the events."""
        if self.fd is None:
            return True
        seen = False
        try:
            while os.read(self.fd, 65536):
                seen = True
        except BlockingIOError:
            pass
        except OSError:
            return True
        return seen

    def watch(self, dirs):
        """Watches the directories a snapshot walked (watching one again is harmless)."""
        if self.fd is None:
            return
        for path in dirs:
            if self.libc.inotify_add_watch(self.fd, os.fsencode(path), _WATCH_MASK) < 0:
                os.close(self.fd)  # out of watches, most likely: walk every time from now on
                self.fd = None
                return
