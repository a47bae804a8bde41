"""Reading pickles as data: only plain containers and scalars, never code.

A pickle is a program: unpickling one with :mod:`pickle` can call any importable function
(``os.system`` through ``__reduce__``). The refer toolkit ships its RefCOCO splits as pickles
(``refs(unc).p``, written by Python 2, protocol 0-2), so they are read here with an unpickler
that refuses every global: no class, function or extension can be looked up, hence none can be
called. What it builds is checked to hold only ``dict``, ``list``, ``tuple``, ``str``,
``bytes``, ``int``, ``float``, ``bool`` and ``None``.

Python 2 ``str`` values (bytes in a protocol 0-2 pickle) come back as ``str``: decoded as UTF-8,
or Latin-1 where they are not UTF-8 (``strings="decode"``, the default); ``strings="bytes"``
keeps them as bytes.
"""

from __future__ import annotations

import io
import pickle
from typing import Any, Literal

from lavida_data.importers.sources import read_bytes

_PLAIN_SCALARS = (str, bytes, int, float, bool, type(None))


class UnsafePickleError(ValueError):
    """A pickle asks for something other than plain data (a global, an object) or is malformed."""


class _DataUnpickler(pickle.Unpickler):
    def __init__(self, file, name: str, encoding: str):
        super().__init__(file, encoding=encoding, errors="strict")
        self._name = name

    def find_class(self, module: str, name: str):  # noqa: D401 - the pickle hook
        raise UnsafePickleError(
            f"{self._name}: refused to load global {module}.{name}: only plain data (dicts, lists, "
            "tuples, strings, numbers) is read from pickles, never classes or functions")

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self._name}: refused a persistent id ({str(pid)[:60]}): only plain data is read")


def _protocol(data: bytes) -> int:
    """The protocol a pickle declares (``PROTO n``), 0-1 when it has none."""
    return data[1] if len(data) >= 2 and data[0] == 0x80 else 1


def _decode(b: bytes) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b.decode("latin-1")


def _plain(obj: Any, name: str, decode: bool) -> Any:
    """``obj`` rebuilt from plain types only (Python 2 strings decoded when ``decode``);
    anything else raises."""
    t = type(obj)
    if t is dict:
        return {_plain(k, name, decode): _plain(v, name, decode) for k, v in obj.items()}
    if t is list:
        return [_plain(v, name, decode) for v in obj]
    if t is tuple:
        return tuple(_plain(v, name, decode) for v in obj)
    if t is bytes and decode:
        return _decode(obj)
    if t in _PLAIN_SCALARS:
        return obj
    raise UnsafePickleError(f"{name}: holds a {t.__name__}; only plain data is read from pickles")


def loads(data: bytes, *, name: str = "<pickle>", strings: Literal["decode", "bytes"] = "decode") -> Any:
    """The plain data of a pickle (any protocol); :class:`UnsafePickleError` names ``name`` when
    the pickle refers to any global or is not a readable pickle."""
    decode = strings == "decode" and _protocol(data) <= 2
    try:
        obj = _DataUnpickler(io.BytesIO(data), name, "bytes").load()
    except UnsafePickleError:
        raise
    except Exception as e:  # truncated, not a pickle, or an opcode applied to plain data
        raise UnsafePickleError(f"{name}: not a readable data pickle ({type(e).__name__}: {e})") from None
    try:
        return _plain(obj, name, decode)
    except RecursionError:
        raise UnsafePickleError(f"{name}: nested too deeply to be plain data") from None


def load(uri: str, *, strings: Literal["decode", "bytes"] = "decode") -> Any:
    """The plain data of the pickle file at ``uri`` (local or ``s3://``); see :func:`loads`."""
    return loads(read_bytes(uri), name=uri, strings=strings)
