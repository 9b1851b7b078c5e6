"""Which instrument wrote a frame: `instrument_for`."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from astropy.io import fits

from .exceptions import ApocalError, UnknownInstrumentError
from .instrument import Instrument
from .instruments import BUILTIN_INSTRUMENTS
from .io import read_header

__all__ = ["instrument_for", "load_instrument"]


def instrument_for(path_or_header: str | os.PathLike | fits.Header,
                   candidates: Sequence[type[Instrument]] | None = None,
                   filename: str | None = None) -> Instrument:
    """The instrument that wrote a frame, recognised from its header.

    Parameters
    ----------
    path_or_header : str, path-like or astropy.io.fits.Header
        A raw file or its header (of the image, merged with the primary
        header, as `apocal.io.read_header` gives it).
    candidates : sequence of Instrument subclasses, optional
        Classes to try, in order; default the built-in ones (KOSMOS, DIS Red,
        DIS Blue, SBO). Pass your own subclasses (with a ``matches``
        classmethod) to have them recognised too.
    filename : str, optional
        The file's name, for a header given without its file (some cameras
        say in the name what their headers do not, e.g. DIS ``...r.fits``).

    Returns
    -------
    Instrument
        An instance of the first class whose ``matches`` accepts the header.

    Raises
    ------
    UnknownInstrumentError
        If no candidate recognises the header; the message shows the cards
        that were looked at.
    """
    if isinstance(path_or_header, fits.Header):
        header, source = path_or_header, filename
    else:
        source = str(path_or_header)
        header = read_header(path_or_header)
        filename = filename or Path(source).name
    for cls in candidates or BUILTIN_INSTRUMENTS:
        if cls.recognises(header, filename):
            return cls()
    seen = ", ".join(f"{key}={header.get(key)!r}" for key in ("INSTRUME", "DETECTOR", "SWCREATE")
                     if key in header) or "no INSTRUME, DETECTOR or SWCREATE card"
    names = ", ".join(cls.name for cls in (candidates or BUILTIN_INSTRUMENTS))
    raise UnknownInstrumentError(source, f"no instrument recognises this header ({seen}); "
                                 f"known: {names}. Name the instrument, or pass your own "
                                 f"Instrument subclass")


def load_instrument(spec: str, **settings: Any) -> Instrument:
    """An instrument from a name or a user's class.

    Parameters
    ----------
    spec : str
        A built-in name (``kosmos``, ``dis-red``, ``dis-blue``, ``sbo``; the
        class names work too), ``package.module:Class`` for an importable
        class, or ``path/to/file.py:Class`` for a class in a Python file.
    **settings
        Passed to the class (e.g. ``gain=1.3, read_noise=9``).

    Raises
    ------
    ApocalError
        If the name is unknown, the module or file cannot be loaded, or the
        class is not an `Instrument` subclass.
    """
    builtins = {cls.name: cls for cls in BUILTIN_INSTRUMENTS}
    builtins.update({cls.__name__.lower(): cls for cls in BUILTIN_INSTRUMENTS})
    if ":" not in spec:
        cls = builtins.get(spec.strip().lower())
        if cls is None:
            raise ApocalError(f"unknown instrument {spec!r}; built-in: "
                              f"{', '.join(c.name for c in BUILTIN_INSTRUMENTS)}, or give "
                              f"module:Class or file.py:Class")
        return cls(**settings)
    where, _, name = spec.rpartition(":")
    try:
        if where.endswith(".py"):
            path = Path(where)
            if not path.is_file():
                raise ApocalError(f"{path}: no such Python file")
            module_spec = importlib.util.spec_from_file_location(
                f"apocal_user_{path.stem}", path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_spec.name] = module
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
        cls = getattr(module, name)
    except ApocalError:
        raise
    except (Exception, SystemExit) as err:  # the user's code may raise anything, even exit
        raise ApocalError(f"cannot load instrument {spec!r}: {_what(err)}") from err
    if not (isinstance(cls, type) and issubclass(cls, Instrument)):
        raise ApocalError(f"{spec!r} is not an apocal.Instrument subclass")
    try:
        return cls(**settings)
    except (Exception, SystemExit) as err:
        raise ApocalError(f"cannot create instrument {spec!r}: {_what(err)}") from err


def _what(err: BaseException) -> str:
    if isinstance(err, SystemExit):
        return f"it called sys.exit({err.code!r})"
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
