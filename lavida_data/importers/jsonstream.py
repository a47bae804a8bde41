"""Streaming JSON for the importers: an annotation file read value by value, never whole.

:class:`JsonStream` decodes one value at a time from a sliding buffer (a value cut by the end of
the buffer, a number included, is read on and decoded again), so memory is bounded by the
largest value read at once. Two readers build on it:

- :func:`iter_json_top`, strict: a JSON file's top level, an array's items or an object's
  members, an array inside a member streamed item by item (COCO's ``images[]`` and
  ``annotations[]``); invalid JSON raises :class:`JsonError`.
- :func:`read_records`, tolerant: the records (objects) of a JSON array, of JSON lines, or of an
  object mapping ids to records; a bad record is counted (``bad_json``, ``not_object``), never
  fatal.
"""

from __future__ import annotations

import io
import json
import re
from typing import IO, Any, Iterator

from lavida_data.importers.errors import ImportError_
from lavida_data.importers.sources import OnError, open_binary

_NUMBER_TAIL = re.compile(r"[0-9.eE+-]*\Z")


class JsonError(ImportError_):
    """A file that is not valid JSON where it has to be."""


class JsonStream:
    """A JSON text read incrementally: values are decoded one at a time from a sliding buffer
    (``pending``: text already read from ``text``, decoded first)."""

    def __init__(self, text: IO[str], name: str, chunk: int = 1 << 20, pending: str = ""):
        self.text, self.name, self.chunk = text, name, chunk
        self.buf, self.pos, self.eof = pending, 0, False
        self.dec = json.JSONDecoder()

    def _fill(self) -> bool:
        if self.eof:
            return False
        more = self.text.read(self.chunk)
        if not more:
            self.eof = True
            return False
        self.buf = self.buf[self.pos:] + more
        self.pos = 0
        return True

    def peek(self) -> str:
        """The next non-blank character ('' at the end), not consumed."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._fill():
                return ""

    def expect(self, chars: str, what: str) -> str:
        """Consume the next non-blank character, one of ``chars``; :class:`JsonError` otherwise."""
        c = self.peek()
        if not c or c not in chars:
            found = repr(c) if c else "the end of the file"
            raise JsonError(f"{self.name}: invalid JSON: expected {what}, found {found}")
        self.pos += 1
        return c

    def value(self) -> Any:
        """The next value, decoded whole."""
        self.peek()
        while True:
            try:
                v, end = self.dec.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as e:
                if not self._fill():
                    raise JsonError(f"{self.name}: invalid JSON: {e.msg}") from None
                continue
            if (isinstance(v, (int, float)) and not isinstance(v, bool) and _NUMBER_TAIL.match(self.buf, end)
                    and self._fill()):  # a number cut by the end of the buffer: read on, decode it again
                continue
            self.pos = end
            return v

    def items(self) -> Iterator[Any]:
        """The values of an array whose ``[`` was just consumed."""
        if self.peek() == "]":
            self.pos += 1
            return
        while True:
            yield self.value()
            if self.expect(",]", "',' or ']' in an array") == "]":
                return

    def members(self) -> Iterator[str]:
        """The keys of an object whose ``{`` was just consumed; the caller reads each key's value
        (:meth:`value`, or ``[`` and :meth:`items`) before asking for the next key."""
        if self.peek() == "}":
            self.pos += 1
            return
        while True:
            key = self.value()
            if not isinstance(key, str):
                raise JsonError(f"{self.name}: invalid JSON: an object key must be a string")
            self.expect(":", "':' after an object key")
            yield key
            if self.expect(",}", "',' or '}' in an object") == "}":
                return


def iter_json_top(uri: str) -> Iterator[tuple[str | None, Any, bool]]:
    """A JSON file's top level, streamed: for an array, ``(None, item, True)`` per item; for an
    object, ``(key, item, True)`` per item of a member whose value is an array and
    ``(key, value, False)`` for any other member. Memory is bounded by one item."""
    with open_binary(uri) as raw:
        js = JsonStream(io.TextIOWrapper(raw, encoding="utf-8-sig"), uri)  # a byte-order mark is skipped
        if js.expect("[{", "a JSON array or object") == "[":
            for item in js.items():
                yield None, item, True
            return
        for key in js.members():
            if js.peek() == "[":
                js.expect("[", "an array")
                for item in js.items():
                    yield key, item, True
            else:
                yield key, js.value(), False


# ---------------------------------------------------------------------------------------- records


def read_records(src: str | IO[bytes], on_error: OnError, fields: tuple[str, ...] = (),
                 name: str | None = None) -> Iterator[dict]:
    """The records of a JSON file (a URI, or a binary stream called ``name``), streamed: a JSON
    array, JSON lines, or one object mapping ids to records (``{id: record}``, told from a single
    record by ``fields``, keys a record has: the first member's value holds one of them); a
    mapping's records get their ``id``. Bad records are reported to ``on_error`` (``bad_json``,
    ``not_object``), never raised; a broken array or object ends the file (``bad_json``)."""
    if isinstance(src, str):
        with open_binary(src) as raw:
            yield from read_records(raw, on_error, fields, name or src)
        return
    name = name or "<json>"
    text = io.TextIOWrapper(src, encoding="utf-8-sig", errors="replace")
    first = text.read(1)
    while first.isspace():
        first = text.read(1)
    if not first:
        return
    if first == "[":
        yield from _guarded(_array_records(JsonStream(text, name), on_error), on_error)
        return
    line = first + text.readline()
    try:
        head = json.loads(line)
    except json.JSONDecodeError as e:
        if first == "{" and not name.lower().endswith(".jsonl"):  # one object over several lines
            yield from _guarded(_object_records(JsonStream(text, name, pending=line), on_error, fields), on_error)
            return
        on_error("bad_json", f"{name}:1: {e.msg}")
    else:
        yield from _line_records(head, f"{name}:1", on_error, fields)
    for lineno, line in enumerate(text, 2):  # JSON lines
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            on_error("bad_json", f"{name}:{lineno}: {e.msg}")
            continue
        yield from _line_records(rec, f"{name}:{lineno}", on_error, fields)


def _is_entry(key: str, value: Any, fields: tuple[str, ...]) -> bool:
    """Whether ``key: value`` is an entry of a ``{id: record}`` mapping rather than a record's field."""
    return bool(fields) and key not in fields and isinstance(value, dict) and any(f in value for f in fields)


def _line_records(obj: Any, where: str, on_error: OnError, fields: tuple[str, ...]) -> Iterator[dict]:
    if not isinstance(obj, dict):
        on_error("not_object", f"{where}: a {type(obj).__name__}")
    elif obj and all(_is_entry(k, v, fields) for k, v in obj.items()):
        yield from ({"id": k, **v} for k, v in obj.items())
    else:
        yield obj


def _array_records(js: JsonStream, on_error: OnError) -> Iterator[dict]:
    """The records of an array whose ``[`` was consumed."""
    for i, item in enumerate(js.items()):
        if isinstance(item, dict):
            yield item
        else:
            on_error("not_object", f"{js.name}: record {i} is a {type(item).__name__}")


def _object_records(js: JsonStream, on_error: OnError, fields: tuple[str, ...]) -> Iterator[dict]:
    """An object written over several lines: a mapping's records, streamed, or one record."""
    js.expect("{", "an object")
    record: dict[str, Any] = {}
    mapping = None
    for key in js.members():
        value = js.value()
        if mapping is None:
            mapping = _is_entry(key, value, fields)
        if not mapping:
            record[key] = value
        elif isinstance(value, dict):
            yield {"id": key, **value}
        else:
            on_error("not_object", f"{js.name}: {key!r} is a {type(value).__name__}")
    if js.peek():
        raise JsonError(f"{js.name}: invalid JSON: data after the top-level object")
    if not mapping:
        yield record


def _guarded(records: Iterator[dict], on_error: OnError) -> Iterator[dict]:
    """``records`` until the JSON breaks: the break is counted (``bad_json``), not raised."""
    try:
        yield from records
    except JsonError as e:
        on_error("bad_json", f"{e} (the rest of the file is unreadable)")
