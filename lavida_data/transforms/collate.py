"""Collation: tokenised samples -> one right-padded batch; bad samples are dropped and reported.

As upstream LaViDa-O's ``DataCollatorForSupervisedDataset``: input ids are padded with the pad id
(LLaDA's end-of-text) and labels with -100 (``pad_label="ignore"``, the default; ``"eos"`` makes
padding a target, as LLaDA's own SFT does); ``extra_pad`` > 0 adds that many more pad columns
(upstream draws it per batch in [-128, 128) and pads the longest sequence further when positive;
our loader draws it from the batch's seeded generator). Attention covers every position, padding
included (``attention_mask`` is all ones: upstream's model attends to end-of-text padding, its
"no sequence attention mask"); ``lengths`` keeps the true lengths.

Batch keys:

* ``input_ids``, ``labels`` (LongTensor [B, L]), ``gen_mask``, ``gen_enc_mask`` (bool [B, L],
  False on padding), ``attention_mask`` (LongTensor [B, L], ones), ``lengths`` (LongTensor [B]);
* ``n_images``, ``n_gen``, ``n_gen_enc`` (LongTensor [B]) when the items have them;
* ``ids``: the kept samples' ids, in order; ``skipped``: ``{"id", "dataset", "reason"}`` of each
  dropped item (one whose ``bad`` is truthy);
* ``gen_pixels``, ``und_pixels``, ``gen_enc_pixels``, ``und_sizes``, ``gen_weight``: a list per
  sample (``[]`` when missing; a sample's single tensor becomes a one-item list);
* any other per-sample key: a list, None where an item lacks it.

A batch whose items are all bad is ``{"ids": [], "skipped": [...], "input_ids": <[0, 0]>}``.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping, Sequence

import torch

from lavida_data.transforms.tokenize import IGNORE_INDEX

_SEQ = ("input_ids", "labels", "gen_mask", "gen_enc_mask")
_COUNTS = ("n_images", "n_gen", "n_gen_enc")
_LISTS = ("gen_pixels", "und_pixels", "gen_enc_pixels", "und_sizes", "gen_weight")
_HANDLED = frozenset((*_SEQ, *_COUNTS, *_LISTS, "id", "bad"))


def collate(
    items: Sequence[Mapping[str, Any]], pad_id: int, *, pad_label: Literal["eos", "ignore"] = "ignore",
    extra_pad: int = 0,
) -> dict[str, Any]:
    """Right-pad ``items`` (outputs of :class:`~lavida_data.transforms.tokenize.Tokenize` plus
    pixels and ids) with ``pad_id``, ``max(extra_pad, 0)`` columns beyond the longest; see the
    module doc for the keys."""
    if pad_label not in ("eos", "ignore"):
        raise ValueError(f"pad_label must be 'eos' or 'ignore', not {pad_label!r}")
    skipped = [
        {"id": it.get("id"), "dataset": it.get("dataset"), "reason": it.get("reason")} for it in items if it.get("bad")
    ]
    kept = [it for it in items if not it.get("bad")]
    if not kept:
        return {"ids": [], "skipped": skipped, "input_ids": torch.empty((0, 0), dtype=torch.long)}

    lengths = []
    for it in kept:
        n = len(it["input_ids"])
        for k in _SEQ[1:]:
            if k in it and len(it[k]) != n:
                raise ValueError(f"sample {it.get('id')!r}: {k} has length {len(it[k])}, input_ids {n}")
        lengths.append(n)
    b, width = len(kept), max(lengths) + max(int(extra_pad), 0)
    input_ids = torch.full((b, width), pad_id, dtype=torch.long)
    labels = torch.full((b, width), pad_id if pad_label == "eos" else IGNORE_INDEX, dtype=torch.long)
    gen_mask = torch.zeros((b, width), dtype=torch.bool)
    gen_enc_mask = torch.zeros((b, width), dtype=torch.bool)
    for i, (it, n) in enumerate(zip(kept, lengths)):
        input_ids[i, :n] = torch.as_tensor(it["input_ids"], dtype=torch.long)
        labels[i, :n] = torch.as_tensor(it["labels"], dtype=torch.long) if "labels" in it else IGNORE_INDEX
        if "gen_mask" in it:
            gen_mask[i, :n] = torch.as_tensor(it["gen_mask"], dtype=torch.bool)
        if "gen_enc_mask" in it:
            gen_enc_mask[i, :n] = torch.as_tensor(it["gen_enc_mask"], dtype=torch.bool)

    batch: dict[str, Any] = {
        "input_ids": input_ids,
        "labels": labels,
        "gen_mask": gen_mask,
        "gen_enc_mask": gen_enc_mask,
        "attention_mask": torch.ones((b, width), dtype=torch.long),
        "lengths": torch.tensor(lengths, dtype=torch.long),
        "ids": [it.get("id") for it in kept],
        "skipped": skipped,
    }
    for k in _COUNTS:
        if all(k in it for it in kept):
            batch[k] = torch.tensor([int(it[k]) for it in kept], dtype=torch.long)
    for k in _LISTS:
        if any(k in it for it in kept):
            batch[k] = [_as_list(it.get(k)) for it in kept]
    extra = sorted({k for it in kept for k in it} - _HANDLED - set(batch))
    for k in extra:
        batch[k] = [it.get(k) for it in kept]
    return batch


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, torch.Tensor):
        return [value]
    return list(value)


def extra_pad(rng: Any) -> int:
    """Upstream's per-batch extra padding, ``randint(-128, 128)`` (only positive values pad),
    drawn from ``rng`` (a numpy Generator seeded by the batch's place in training)."""
    return int(rng.integers(-128, 128))
