"""The masked-diffusion objective of LaViDa-O, as small pure functions over tensors.

Per sequence a time ``t`` (``uniform``: U(0,1); ``cosine``: cos(pi u / 2); ``logit_normal``:
sigmoid(N(mean, std))), mask probability ``p = (1 - eps) t + eps``; each eligible position is
masked independently with probability ``p`` and at least one is. Text: only answer tokens are
eligible (labels != -100: content, ``<|eot_id|>``, end-of-text padding); the loss is the mean
cross-entropy over every masked answer token of the micro-batch (no 1/t weighting). Images: an
independent ``t`` per generated image over its VQ ids; the loss is the mean cross-entropy over
every masked VQ position of the micro-batch, optionally weighted by the edited area.

Every draw takes a ``generator``: the trainer seeds one per micro-batch from the seed, the epoch
and the samples' positions in the global order, so a resumed run (at any world size or worker
count) draws the same masks as an uninterrupted one.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

IGNORE = -100
TimePolicy = Literal["uniform", "cosine", "logit_normal"]


def sample_times(n: int, policy: TimePolicy, *, device=None, mean: float = 0.0, std: float = 1.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` diffusion times in (0, 1)."""
    if policy == "uniform":
        return torch.rand(n, device=device, generator=generator)
    if policy == "cosine":
        return torch.cos(math.pi * torch.rand(n, device=device, generator=generator) / 2)
    if policy == "logit_normal":
        return torch.sigmoid(torch.randn(n, device=device, generator=generator) * std + mean)
    raise ValueError(f"unknown time policy {policy!r}")


def mask_probability(t: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    return (1 - eps) * t + eps


def bernoulli_mask(eligible: torch.Tensor, p: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mask each eligible position of each row (dim 0) with its row's probability; at least one
    position of every row that has an eligible one."""
    shape = (-1,) + (1,) * (eligible.dim() - 1)
    masked = (torch.rand(eligible.shape, device=eligible.device, generator=generator) < p.view(shape)) & eligible
    flat_e, flat_m = eligible.reshape(len(eligible), -1), masked.reshape(len(masked), -1)
    need = flat_e.any(1) & ~flat_m.any(1)
    if need.any():  # force one: a random eligible position of each row that got none
        scores = torch.rand(flat_e.shape, device=eligible.device, generator=generator).masked_fill(~flat_e, -1.0)
        pick = scores.argmax(1)
        rows = need.nonzero(as_tuple=True)[0]
        flat_m = flat_m.clone()
        flat_m[rows, pick[rows]] = True
    return flat_m.reshape(eligible.shape)


def mask_text(input_ids: torch.Tensor, labels: torch.Tensor, t: torch.Tensor, mask_id: int,
              keep: torch.Tensor | None = None, generator: torch.Generator | None = None,
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked input ids, positions to predict). ``keep`` rows (plan samples drawn to stay
    unmasked) get no mask."""
    eligible = labels != IGNORE
    if keep is not None:
        eligible = eligible & ~keep.view(-1, 1)
    masked = bernoulli_mask(eligible, mask_probability(t), generator)
    return input_ids.masked_fill(masked, mask_id), masked


def mask_image(ids: torch.Tensor, t: torch.Tensor, mask_id: int,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """VQ ids [N, h, w] with a per-image time: (masked ids, positions to predict)."""
    masked = bernoulli_mask(torch.ones_like(ids, dtype=torch.bool), mask_probability(t), generator)
    return ids.masked_fill(masked, mask_id), masked


def prompt_drop(labels: torch.Tensor, gen_mask: torch.Tensor, gen_enc_mask: torch.Tensor, prob: float,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Positions to replace with the text mask embedding: with probability ``prob`` per sample,
    every non-answer, non-image position (system, user turn, headers, image placeholders)."""
    drop = torch.rand(labels.shape[0], device=labels.device, generator=generator) < prob
    return drop.view(-1, 1) & (labels == IGNORE) & ~gen_mask & ~gen_enc_mask


def text_loss(logits: torch.Tensor, labels: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the masked answer tokens of the micro-batch (0 when none)."""
    if not masked.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[masked].float(), labels[masked])


def image_loss(logits: torch.Tensor, ids: torch.Tensor, masked: torch.Tensor,
               weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy over masked VQ positions; ``weights`` [N,h,w] are renormalised per image
    over its masked tokens (so an image's total weight is its count of masked tokens)."""
    if not masked.any():
        return logits.sum() * 0.0
    ce = F.cross_entropy(logits[masked].float(), ids[masked], reduction="none")
    if weights is None:
        return ce.mean()
    w = weights * masked
    per_image = w.flatten(1).sum(1).clamp_min(1e-12)
    w = w * (masked.flatten(1).sum(1) / per_image).view(-1, 1, 1)
    return (ce * w[masked]).sum() / masked.sum()
