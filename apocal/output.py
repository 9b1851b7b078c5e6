"""Safe writes into an output folder: atomic, honouring the umask, never
through a symbolic link that apocal did not create.

Every product apocal writes goes through `write_atomically` (via
`apocal.io.atomic_write_bytes`): the bytes go to a temporary file
(``.<name>.<random>.part``) in the target folder, are flushed to disk and
the file is then moved into place in one step, so a file is complete or
absent. Files are created with mode 0666 less the umask (as ``open`` does),
so others can read the products where the umask allows it.

Inside a folder protected with `no_links_under` (the night pipeline
protects its output folder) the folders on the way are opened one at a time
relative to each other with ``O_NOFOLLOW``: a symbolic link planted in a
shared output folder (``calibrated -> /elsewhere``) makes the write fail
with a clear error instead of writing elsewhere. The folder itself may be a
link: the user named it.

`sweep_temporaries` removes what an interrupted run (``kill -9``) left:
``.part`` files and unfinished folders of masters.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import stat
from contextlib import contextmanager
from pathlib import Path

from . import stages
from .exceptions import ApocalError

__all__ = ["write_atomically", "no_links_under", "make_folders", "open_for_append",
           "refuse_links", "sweep_temporaries", "remove_tree", "LinkError",
           "TEMPORARY_PATTERN"]

#: Names of apocal's temporary files and folders: ``.<name>.<random>.part``
#: (files being written) and ``.<name>.<random>.partial`` / ``.old``
#: (folders being built or replaced).
TEMPORARY_PATTERN = re.compile(r"^\..*\.[0-9a-f]{8}\.(part|partial|old)$")

# Longest part of a file name kept in the name of its temporary file: the
# temporary name must stay under the 255 bytes a file name may have.
_TEMP_STEM = 60

_protected: list[Path] = []


class LinkError(ApocalError):
    """A path inside a protected output folder is a symbolic link."""


@contextmanager
def no_links_under(folder):
    """Within this block, writes under ``folder`` never follow a link below it."""
    folder = Path(os.path.abspath(folder))
    _protected.append(folder)
    try:
        yield folder
    finally:
        _protected.remove(folder)


def _protected_root(path: Path) -> Path | None:
    for root in reversed(_protected):
        if path == root or root in path.parents:
            return root
    return None


def write_atomically(path, payload: bytes, overwrite: bool = False) -> Path:
    """Write ``payload`` to ``path`` so that it is complete or absent.

    Parameters
    ----------
    path : str or path-like
        The file; its folders are created as needed.
    payload : bytes
    overwrite : bool
        Replace an existing file. Without it an existing file is never
        replaced, even by a concurrent writer.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    LinkError
        If a folder on the way (below a protected folder) is a link.
    OSError
        If the file cannot be written (full disk, read-only folder...); the
        error's ``filename`` is ``path``.
    """
    path = Path(os.path.abspath(path))
    folder = _open_folder(path.parent, create=True)
    try:
        _write_in(folder, path, payload, overwrite)
    finally:
        os.close(folder)
    stages.reached("written", path.name)
    return path


def _write_in(folder: int, path: Path, payload: bytes, overwrite: bool) -> None:
    name = path.name
    if not overwrite and _exists(name, folder):
        raise FileExistsError(f"{path}: exists; pass overwrite=True to replace it")
    temporary = _create_temporary(folder, name, path)
    try:
        try:
            with os.fdopen(temporary[1], "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            if overwrite:
                os.replace(temporary[0], name, src_dir_fd=folder, dst_dir_fd=folder)
            else:
                # link() refuses to replace an existing name: no check-then-write race.
                os.link(temporary[0], name, src_dir_fd=folder, dst_dir_fd=folder,
                        follow_symlinks=False)
        except FileExistsError:
            raise FileExistsError(f"{path}: exists; pass overwrite=True to replace it") from None
        except OSError as err:
            raise _named(err, path) from None
    finally:
        try:
            os.unlink(temporary[0], dir_fd=folder)
        except FileNotFoundError:
            pass


def _create_temporary(folder: int, name: str, path: Path) -> tuple[str, int]:
    stem = name[:_TEMP_STEM]
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(100):
        temporary = f".{stem}.{secrets.token_hex(4)}.part"
        try:
            # mode 0666: the umask decides, as for any file a program creates
            return temporary, os.open(temporary, flags, 0o666, dir_fd=folder)
        except FileExistsError:
            continue
        except OSError as err:
            raise _named(err, path) from None
    raise FileExistsError(f"{path}: no free temporary name")  # pragma: no cover


def _exists(name: str, folder: int) -> bool:
    try:
        os.stat(name, dir_fd=folder, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return False


def _named(err: OSError, path: Path) -> OSError:
    """The same error, naming the file (``[Errno 28]`` alone names nothing)."""
    if err.filename is not None and str(err.filename) == str(path):
        return err
    return type(err)(err.errno, err.strerror or str(err), str(path))


def make_folders(path) -> Path:
    """Create ``path`` and its parents (without following links below a
    protected folder)."""
    os.close(_open_folder(Path(os.path.abspath(path)), create=True))
    return Path(path)


def _open_folder(path: Path, create: bool) -> int:
    """A file descriptor of the folder ``path``; below a protected folder,
    reached one component at a time without following a link."""
    root = _protected_root(path)
    if root is None:
        if create:
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise _named(err, path) from None
        return _open_plain(path)
    fd = _open_plain(root)
    here = root
    try:
        for part in path.relative_to(root).parts:
            here = here / part
            child = _step(fd, part, here, create)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_plain(path: Path) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise _named(err, path) from None


def _step(fd: int, part: str, here: Path, create: bool) -> int:
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        try:
            child = os.open(part, flags, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                raise
            try:
                os.mkdir(part, 0o777, dir_fd=fd)
            except FileExistsError:
                pass
            child = os.open(part, flags, dir_fd=fd)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            _refuse_link(here, fd, part)
        raise _named(err, here) from None
    return child


def _refuse_link(here: Path, fd: int, part: str) -> None:
    try:
        mode = os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode
    except OSError:
        return
    if stat.S_ISLNK(mode):
        raise LinkError(f"{here}: is a symbolic link; apocal does not write through a link "
                        f"it did not create (remove it, or use another output folder)")
    raise ApocalError(f"{here}: exists and is not a folder")


def open_for_append(path):
    """Open a text file for appending (UTF-8), refusing a symbolic link.

    Raises
    ------
    LinkError
        If ``path`` is a symbolic link.
    """
    path = Path(os.path.abspath(path))
    folder = _open_folder(path.parent, create=True)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path.name, flags, 0o666, dir_fd=folder)
    except OSError as err:
        if err.errno == errno.ELOOP:
            _refuse_link(path, folder, path.name)
        raise _named(err, path) from None
    finally:
        os.close(folder)
    return os.fdopen(fd, "a", encoding="utf-8")


def refuse_links(folder, names) -> None:
    """Refuse a symbolic link at any of ``names`` in ``folder`` or below them.

    Parameters
    ----------
    folder : path-like
        An output folder.
    names : iterable of str
        The files and folders apocal writes there.

    Raises
    ------
    LinkError
        Naming the first link found.
    """
    folder = Path(folder)
    for name in names:
        top = folder / name
        for path in [top] + (_walk(top) if top.is_dir() and not top.is_symlink() else []):
            if path.is_symlink():
                raise LinkError(f"{path}: is a symbolic link; apocal does not write through a "
                                f"link it did not create (remove it, or use another output "
                                f"folder)")


def _walk(top: Path) -> list[Path]:
    found = []
    for here, folders, files in os.walk(top, followlinks=False):
        found.extend(Path(here) / n for n in folders + files)
    return found


def sweep_temporaries(folder, names) -> list[Path]:
    """Remove apocal's temporary files and folders left by an interrupted run.

    Looks in ``folder`` and in the trees ``names`` below it for names
    matching `TEMPORARY_PATTERN` (links are removed, never followed).

    Returns
    -------
    list of pathlib.Path
        What was removed.
    """
    folder = Path(folder)
    removed = []
    places = [folder] + [folder / n for n in names]
    for place in places:
        if not place.is_dir() or place.is_symlink():
            continue
        for here, folders, files in os.walk(place, followlinks=False):
            for name in list(folders) + files:
                if TEMPORARY_PATTERN.match(name):
                    path = Path(here) / name
                    remove_tree(path)
                    removed.append(path)
                    if name in folders:
                        folders.remove(name)
            if Path(here) == folder:
                folders[:] = []       # the top level only; its trees are swept on their own
    return removed


def remove_tree(path) -> None:
    """Remove a file, a link (not what it points to) or a folder tree."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        return
    shutil.rmtree(path, ignore_errors=False, onerror=_gone_is_fine)


def _gone_is_fine(function, path, info):
    if not isinstance(info[1], FileNotFoundError):
        raise info[1]


def new_temporary_folder(parent, name: str) -> Path:
    """Create an empty folder ``.<name>.<random>.partial`` in ``parent``
    (created with its parents; 0777 less the umask)."""
    parent = Path(parent)
    folder = _open_folder(Path(os.path.abspath(parent)), create=True)
    try:
        for _ in range(100):
            temporary = f".{name[:_TEMP_STEM]}.{secrets.token_hex(4)}.partial"
            try:
                os.mkdir(temporary, 0o777, dir_fd=folder)
                return parent / temporary
            except FileExistsError:
                continue
            except OSError as err:
                raise _named(err, parent / temporary) from None
    finally:
        os.close(folder)
    raise FileExistsError(f"{parent}: no free temporary name")  # pragma: no cover


def replace_folder(built, target) -> None:
    """Move the folder ``built`` to ``target`` in one step; an existing
    ``target`` is moved aside first and removed after."""
    built, target = Path(built), Path(target)
    old = None
    if target.exists() or target.is_symlink():
        old = target.with_name(f".{target.name[:_TEMP_STEM]}.{secrets.token_hex(4)}.old")
        os.rename(target, old)
    try:
        os.rename(built, target)
    except OSError as err:
        if old is not None:
            os.rename(old, target)
        raise _named(err, target) from None
    if old is not None:
        remove_tree(old)
