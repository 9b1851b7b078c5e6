"""One run at a time in an output folder: `folder_lock`.

The lock is an advisory ``flock`` on ``.apocal.lock`` in the output folder,
which holds the process id of the run that has it. The system releases it
when that process ends, however it ends (``kill -9`` included), so a lock
is never left stale; the file itself stays.
"""

from __future__ import annotations

import errno
import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

from .exceptions import ApocalError

__all__ = ["folder_lock", "LOCK_FILE", "FolderInUseError"]

LOCK_FILE = ".apocal.lock"


class FolderInUseError(ApocalError):
    """Another apocal run is writing into the same output folder."""


@contextmanager
def folder_lock(folder):
    """Hold the lock of ``folder`` for the block.

    Raises
    ------
    FolderInUseError
        If another process holds it; the message gives its process id.
    ApocalError
        If the lock file cannot be created (read-only folder) or is a link.
    """
    path = Path(folder) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ApocalError(f"{path}: is a symbolic link; apocal does not write through a "
                              f"link it did not create (remove it)") from None
        raise ApocalError(f"{folder}: cannot be written ({err.strerror})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            raise FolderInUseError(f"{folder}: in use by another apocal run (process "
                                   f"{holder}); wait for it to finish, or use another output "
                                   f"folder") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as err:
            raise ApocalError(f"{path}: cannot be written ({err.strerror})") from None
        yield path
    finally:
        os.close(fd)        # releases the lock
