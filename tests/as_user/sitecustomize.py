"""Loaded by the processes a test starts with this folder on PYTHONPATH (tests run as root, and root
writes through `chmod a-w`): Python's own writes (open for writing, os.open with O_WRONLY/O_RDWR/O_CREAT,
mkdir, replace, rename, unlink) under KBN_TEST_AS_USER get the PermissionError (EACCES) that an
unprivileged user gets from the kernel when the folder they write into, or the file, has no write
permission. The test makes the folder read-only with a real chmod; only root's bypass is taken away."""

import builtins
import errno
import io
import os

ROOT = os.environ.get("KBN_TEST_AS_USER")


def _denied(path, new_entry: bool) -> None:
    try:
        p = os.path.abspath(os.fsdecode(path))
    except TypeError:  # a file descriptor
        return
    if not ROOT or not (p + os.sep).startswith(os.path.abspath(ROOT) + os.sep):
        return
    target = p if os.path.exists(p) and not new_entry else os.path.dirname(p)
    try:
        writable = os.stat(target).st_mode & 0o200
    except OSError:
        return
    if not writable:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), p)


def _wrap(fn, check):
    def wrapped(*args, **kwargs):
        check(*args, **kwargs)
        return fn(*args, **kwargs)

    return wrapped


def _open_check(file, mode="r", *a, **k):
    if any(c in mode for c in "wax+"):
        _denied(file, new_entry=not os.path.exists(os.fsdecode(file)) if not isinstance(file, int) else False)


def _os_open_check(path, flags, *a, **k):
    if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
        _denied(path, new_entry=bool(flags & os.O_CREAT) and not os.path.exists(path))


if ROOT:
    builtins.open = io.open = _wrap(io.open, _open_check)
    os.open = _wrap(os.open, _os_open_check)
    os.mkdir = _wrap(os.mkdir, lambda path, *a, **k: _denied(path, True))
    os.replace = _wrap(os.replace, lambda src, dst, *a, **k: (_denied(src, True), _denied(dst, True)))
    os.rename = _wrap(os.rename, lambda src, dst, *a, **k: (_denied(src, True), _denied(dst, True)))
    os.unlink = os.remove = _wrap(os.unlink, lambda path, *a, **k: _denied(path, True))
