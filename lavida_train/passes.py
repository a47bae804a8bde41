"""A training step's forward passes: one step's batch (one length group) split into the passes
one process runs, each what one rank of a k-times larger world would hold."""

from __future__ import annotations

import torch


def num_samples(batch: dict) -> int:
    """Samples of a step or forward pass: kept plus skipped (equal on every rank in a step)."""
    return len(batch["ids"]) + len(batch["skipped"])


def split_step(batch: dict, microbatch_size: int = 0, *, parts: int = 1) -> list[dict]:
    """Composer's ``split_batch``: one step's batch (one length group, n samples kept + skipped)
    as min(parts, n) forward passes of nearly equal size (the first ones one larger); with
    ``parts`` = 1 (upstream's scripts: no accumulation) the batch itself. ``microbatch_size`` is
    ignored: a group's pass holds about ``max(int(B * f_g), 1)`` samples, B x k / k of the step.

    A pass is what a rank of a k-times larger world would hold: the next slice of the step's
    samples in their order (by ``position``, skipped ones included, when the skipped records
    carry their positions; else kept samples first and skipped ones spread over the passes from
    the last), padded only to its own longest sample plus the step's extra padding (upstream
    collates each device's batch on its own). So one process accumulating k passes trains on the
    same forward passes, with the same masks, as k processes: see :func:`pass_slices`.

    The count of passes depends on n only, so it is the same on every rank. Composer weights each
    pass's loss by its samples over the step's (kept + skipped)."""
    ids, skipped = list(batch["ids"]), list(batch.get("skipped") or [])
    kept, n = len(ids), len(ids) + len(skipped)
    count = max(1, min(parts, n))
    if count == 1:
        return [batch]
    lengths = batch.get("lengths")
    width = batch["input_ids"].shape[1] if batch["input_ids"].dim() == 2 else 0
    extra = width - int(lengths.max()) if lengths is not None and kept else 0
    out = []
    for (k0, nk), (s0, ns) in pass_slices(batch, count):
        part: dict = {}
        own = int(lengths[k0:k0 + nk].max()) + extra if lengths is not None and nk else width
        for key, value in batch.items():
            if key == "skipped":
                part[key] = skipped[s0:s0 + ns]
            elif isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == kept:
                value = value[k0:k0 + nk]
                part[key] = value[:, :own] if value.dim() >= 2 and value.shape[1] == width else value
            elif isinstance(value, list) and len(value) == kept:
                part[key] = value[k0:k0 + nk]
            else:  # the step's own values: step, group
                part[key] = value
        out.append(part)
    return out


def pass_slices(batch: dict, count: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """For each of ``count`` passes: (first kept sample, kept samples), (first skipped record,
    skipped records). Sizes ``n // count`` (+1 for the first ``n % count``), as the loader gives
    each rank an equal share. With a ``position`` on every skipped record (and the kept samples'
    ``position`` list) a pass takes the next samples by position, as a rank takes its slice of
    the global batch; otherwise kept samples fill the passes first and the skipped ones are
    spread from the last pass."""
    ids, skipped = list(batch["ids"]), list(batch.get("skipped") or [])
    kept, n = len(ids), len(ids) + len(skipped)
    sizes = [n // count + (i < n % count) for i in range(count)]
    kept_pos = batch.get("position")
    if skipped and all(isinstance(s, dict) and s.get("position") is not None for s in skipped) \
            and kept_pos is not None and len(kept_pos) == kept:
        order = sorted([(int(p), 0) for p in kept_pos] + [(int(s["position"]), 1) for s in skipped])
        bad, i = [], 0
        for size in sizes:
            bad.append(sum(kind for _, kind in order[i:i + size]))
            i += size
    else:
        bad = [0] * count
        left, i = len(skipped), count - 1
        while left:
            if bad[i] < sizes[i]:
                bad[i] += 1
                left -= 1
            i = (i - 1) % count
    out, k0, s0 = [], 0, 0
    for size, nbad in zip(sizes, bad):
        out.append(((k0, size - nbad), (s0, nbad)))
        k0, s0 = k0 + size - nbad, s0 + nbad
    return out
