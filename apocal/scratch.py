"""Where temporary files go (decompressed copies of gzip-compressed raw
frames), and how big they may be.

By default temporaries go to the system's temporary folder (``$TMPDIR``).
The night pipeline puts them in ``.apocal-tmp/`` inside its output folder
(`scratch_folder`), removes that folder when it ends, however it ends
(exception, Ctrl-C, SIGTERM), and empties it when a run starts, so even
what a ``kill -9`` left is removed by the next run.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

__all__ = ["scratch_folder", "new_scratch_file", "check_room", "MAX_TEMPORARY_BYTES",
           "SCRATCH_FOLDER"]

#: Name of the scratch folder inside an output folder.
SCRATCH_FOLDER = ".apocal-tmp"

#: Largest temporary copy of one file (bytes): far above any real CCD frame
#: (a 10k x 10k 64-bit image is 0.8 GB), far below what a "gzip bomb"
#: (a small file whose header declares a huge image) would write.
MAX_TEMPORARY_BYTES = 4 * 2**30

_lock = threading.Lock()
_folders: list[Path] = []


@contextmanager
def scratch_folder(path):
    """Put temporaries into ``path`` within the block; the folder is emptied
    first (leftovers of a killed run) and removed at the end."""
    path = Path(path)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    with _lock:
        _folders.append(path)
    try:
        yield path
    finally:
        with _lock:
            _folders.remove(path)
        shutil.rmtree(path, ignore_errors=True)


def current_folder() -> Path:
    """The folder temporaries go to now."""
    with _lock:
        if _folders:
            return _folders[-1]
    return Path(tempfile.gettempdir())


def new_scratch_file(prefix: str = "apocal-", suffix: str = ".fits") -> tuple[int, str]:
    """Create a new temporary file (mode 0600); returns its descriptor and name."""
    return tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=current_folder())


def check_room(needed: int) -> str | None:
    """Why a temporary copy of ``needed`` bytes is refused (more than
    `MAX_TEMPORARY_BYTES`: a damaged or hostile file), or None.

    Raises
    ------
    OSError
        ENOSPC, naming the temporary folder, if it has less free space
        than ``needed``: a problem of the machine, not of the file.
    """
    if needed > MAX_TEMPORARY_BYTES:
        return (f"its header declares {needed / 2**30:.1f} GiB of data, more than apocal "
                f"decompresses ({MAX_TEMPORARY_BYTES / 2**30:.0f} GiB); a damaged or "
                f"hostile file?")
    folder = current_folder()
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise OSError(errno.ENOSPC, f"No space left on device for a temporary copy of "
                                    f"{needed / 2**20:.1f} MiB ({free / 2**20:.1f} MiB free)",
                      str(folder))
    return None


def remove_quietly(name) -> None:
    """Remove a temporary file that may be gone already."""
    try:
        os.unlink(name)
    except FileNotFoundError:
        pass
