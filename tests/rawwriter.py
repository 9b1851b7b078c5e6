"""Raw FITS files written byte by byte from explicit arrays and cards.

The truth of the reading, layout and assembly tests: it shares no code with
apocal (nor with astropy's writer), so a section or a scaling that apocal
gets wrong cannot be wrong here in the same way. FITS as the standard
writes it: 80-character cards, 2880-byte blocks, big-endian pixels stored
as ``(value - BZERO) / BSCALE``.
"""

import gzip

import numpy as np

BLOCK = 2880
STORED = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


def card(key, value=None, comment=""):
    """One 80-character header card."""
    if value is None:
        return f"{key:<80}"[:80]
    if isinstance(value, bool):
        text = ("T" if value else "F").rjust(20)
    elif isinstance(value, (int, np.integer)):
        text = str(int(value)).rjust(20)
    elif isinstance(value, float):
        text = repr(value).upper().rjust(20)
    else:
        text = "'" + str(value).replace("'", "''").ljust(8) + "'"
    line = f"{key:<8}= {text}" + (f" / {comment}" if comment else "")
    assert len(line) <= 80, line
    return line.ljust(80)


def image(values=None, bitpix=16, bzero=0, bscale=1, cards=(), extname=None):
    """An HDU: its pixel values (as they should read), storage and cards."""
    return {"values": values, "bitpix": bitpix, "bzero": bzero, "bscale": bscale,
            "cards": list(cards.items()) if isinstance(cards, dict) else list(cards),
            "extname": extname}


def _hdu_bytes(hdu, primary, more):
    values = hdu["values"]
    shape = () if values is None else np.shape(values)
    lines = [card("SIMPLE", True) if primary else card("XTENSION", "IMAGE"),
             card("BITPIX", hdu["bitpix"]), card("NAXIS", len(shape))]
    lines += [card(f"NAXIS{i + 1}", n) for i, n in enumerate(reversed(shape))]
    if primary and more:
        lines.append(card("EXTEND", True))
    if not primary:
        lines += [card("PCOUNT", 0), card("GCOUNT", 1)]
    if hdu["extname"]:
        lines.append(card("EXTNAME", hdu["extname"]))
    payload = b""
    if values is not None:
        values = np.asarray(values, dtype=np.float64)
        stored = (values - hdu["bzero"]) / hdu["bscale"]
        if hdu["bitpix"] > 0:
            stored = np.round(stored)
            info = np.iinfo(STORED[hdu["bitpix"]])
            assert stored.min() >= info.min and stored.max() <= info.max, "value out of range"
        data = stored.astype(STORED[hdu["bitpix"]])
        assert np.array_equal(data.astype(np.float64) * hdu["bscale"] + hdu["bzero"], values), \
            "these values cannot be stored exactly this way"
        if hdu["bzero"] or hdu["bscale"] != 1:
            lines += [card("BZERO", hdu["bzero"]), card("BSCALE", hdu["bscale"])]
        payload = data.tobytes()
    lines += [card(key, value) for key, value in hdu["cards"]] + [card("END")]
    header = "".join(lines).encode("ascii")
    return (header + b" " * (-len(header) % BLOCK) + payload
            + b"\0" * (-len(payload) % BLOCK))


def write_raw(path, *hdus, compress=False):
    """Write HDUs (from `image`) to ``path``, gzip-compressed if asked; the
    first is the primary HDU (``image(None, ...)`` for an empty one)."""
    content = b"".join(_hdu_bytes(hdu, i == 0, len(hdus) > 1) for i, hdu in enumerate(hdus))
    with (gzip.open if compress else open)(path, "wb") as handle:
        handle.write(content)
    return path
