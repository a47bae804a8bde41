"""Sampling strategies: ``all``/``full``, ``first:N``, ``end:N``, ``random:N``, ``dup:N``.

They mean what upstream's loader makes them mean, on the rows kept after filtering:
``first:N`` / ``end:N`` are the first / last N rows (all of them when N exceeds the rows, and
``end:0`` is every row, as upstream's ``rows[-0:]``); a percentage N% is ``ceil(N * rows / 100)``
rows; ``random:N`` is the very subset upstream's ``DataFrame.sample(n=N, random_state=42)``
takes (a fixed subset: the mixture's seed does not change it); ``dup:N`` repeats each row N times.
Unlike upstream, an unknown kind is an error, a percentage may have decimals (``12.5%``) and every
strategy works for every table format.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Literal

import numpy as np

from lavida_data.errors import suggest

Kind = Literal["all", "first", "end", "random", "dup"]
KINDS: tuple[str, ...] = ("all", "first", "end", "random", "dup")
_ALIASES = {"full": "all"}
_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)%$")
_INT = re.compile(r"^\d+$")
#: the ``random_state`` upstream passes to ``DataFrame.sample``
UPSTREAM_RANDOM_STATE = 42


@dataclass(frozen=True)
class SamplingStrategy:
    """A parsed sampling strategy. ``count`` xor ``percent`` is set unless ``kind == "all"``."""

    kind: Kind = "all"
    count: int | None = None
    percent: Decimal | None = None

    @classmethod
    def parse(cls, text: str) -> "SamplingStrategy":
        if not isinstance(text, str):
            raise ValueError(f"sampling_strategy must be a string, got {type(text).__name__}")
        raw = text.strip()
        kind, sep, arg = raw.partition(":")
        kind = _ALIASES.get(kind.strip().lower(), kind.strip().lower())
        if not sep:
            if kind == "all":
                return cls("all")
            hint = suggest(kind, list(KINDS) + ["full"])
            raise ValueError(
                f"unknown sampling strategy {text!r}{hint}; expected all, full, first:N, end:N, "
                "random:N or dup:N"
            )
        if kind not in KINDS or kind == "all":
            hint = suggest(kind, [k for k in KINDS if k != "all"])
            raise ValueError(
                f"unknown sampling strategy kind {kind!r} in {text!r}{hint}; expected first, end, "
                "random or dup"
            )
        arg = arg.strip()
        if _INT.match(arg):
            n = int(arg)
            if n <= 0 and kind != "end":  # upstream builds an empty dataset, then fails reading it
                raise ValueError(f"{text!r}: N must be at least 1")
            return cls(kind, count=n)  # type: ignore[arg-type]
        m = _PERCENT.match(arg)
        if m:
            if kind == "dup":
                raise ValueError(f"{text!r}: dup takes an integer repeat count, not a percentage")
            try:
                pct = Decimal(m.group(1))
            except InvalidOperation as e:  # pragma: no cover - regex guarantees a number
                raise ValueError(f"{text!r}: bad percentage") from e
            if not (0 < pct <= 100 or pct == 0 and kind == "end"):
                raise ValueError(f"{text!r}: a percentage must be in (0%, 100%]")
            return cls(kind, percent=pct)  # type: ignore[arg-type]
        raise ValueError(
            f"{text!r}: N must be a positive integer or a percentage such as 50% or 12.5%"
        )

    def __str__(self) -> str:
        if self.kind == "all":
            return "all"
        n = f"{self.percent}%" if self.percent is not None else str(self.count)
        return f"{self.kind}:{n}"

    @property
    def keeps_everything(self) -> bool:
        """``end:0`` (or ``end:0%``): every row, as upstream's ``rows[-0:]``."""
        return self.kind == "end" and (self.count == 0 or self.percent == 0)

    def resolve(self, rows: int) -> int:
        """N as a row count for a table of ``rows`` kept rows (percentages rounded up, exactly:
        upstream's ``math.ceil(int(pct) * rows / 100)`` for whole percentages)."""
        if self.percent is not None:
            return int(math.ceil(self.percent * rows / 100))
        return int(self.count or 0)

    @property
    def repeat(self) -> int:
        return int(self.count or 1) if self.kind == "dup" else 1

    def select(self, rows: int, *, seed: int, dataset: str) -> np.ndarray:
        """Positions (0-based, into the kept rows) that one pass over the dataset uses, in order.

        ``dup:N`` returns every position once; its repeats are :attr:`repeat`. ``random:N`` returns
        the positions upstream's ``DataFrame.sample(n=N, random_state=42)`` picks (see
        :func:`upstream_sample`), in table order; it is an error when N exceeds ``rows``. ``seed``
        does not change any strategy's rows (it is kept for callers and plugins).
        """
        if self.kind in ("all", "dup") or self.keeps_everything:
            return np.arange(rows, dtype=np.int64)
        n = self.resolve(rows)
        if self.kind == "first":
            return np.arange(min(n, rows), dtype=np.int64)
        if self.kind == "end":
            return np.arange(max(rows - n, 0), rows, dtype=np.int64)
        if n > rows:
            raise ValueError(
                f"dataset {dataset!r}: {self} asks for {n} rows but only {rows} remain after filters"
            )
        return np.sort(upstream_sample(rows, n)).astype(np.int64)


def upstream_sample(rows: int, n: int) -> np.ndarray:
    """The positions ``DataFrame.sample(n=n, random_state=42)`` takes from ``rows`` rows, in its
    order: pandas draws ``RandomState(42).choice(rows, n, replace=False)``, the first ``n`` items of
    ``RandomState(42).permutation(rows)``. The same shuffle of a 32-bit range (half the memory for
    a large table) gives the same permutation. A private generator: no global state is used."""
    order = np.arange(rows, dtype=np.int32 if rows < 2**31 else np.int64)
    np.random.RandomState(UPSTREAM_RANDOM_STATE).shuffle(order)
    return order[:n]


def stable_hash(text: str) -> int:
    """A 64-bit hash of ``text`` that is the same in every process (unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
