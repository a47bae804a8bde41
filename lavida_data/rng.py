"""Per-sample random generators.

Every random choice in a sample derives from the mixture's seed and the sample's place in
training: the epoch and the position in that epoch's global order. Re-running gives the same
values; the repeats of one row (``dup:N``, or later epochs) sit at other positions and so differ.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np


def _key(seed: int, epoch: int, position: int, salt: str) -> bytes:
    return hashlib.blake2b(f"{seed}/{epoch}/{position}/{salt}".encode(), digest_size=16).digest()


def sample_rng(seed: int, epoch: int, position: int, salt: str = "convert") -> random.Random:
    """A :class:`random.Random` for one sample; ``salt`` separates independent stages."""
    return random.Random(int.from_bytes(_key(seed, epoch, position, salt), "little"))


def sample_np_rng(seed: int, epoch: int, position: int, salt: str = "transform") -> np.random.Generator:
    """A numpy generator for one sample (image transforms and the like)."""
    words = np.frombuffer(_key(seed, epoch, position, salt), dtype=np.uint32)
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(words.tolist())))
