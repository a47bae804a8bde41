"""The masked-diffusion objective of LaViDa-O, as upstream computes it, in small pure functions.

Labels. Upstream's model makes every end-of-text token a target (``labels[input_ids == eos] =
eos``: LLaDA's padding is predicted, "no sequence attention mask") and never masks nor predicts
the infill token ``<|reserved_token_1|>``: :func:`revert_padding_labels`, ``infill_id``.

Masking (upstream's ``forward_process``). Per row a time ``t`` (``uniform``: U(0,1); ``cosine``:
cos(pi u / 2); ``logit_normal``: sigmoid(N(mean, std))), ``p = (1 - eps) t + eps``, one uniform
``u`` per position; a position is masked when ``u <= max(p, min(u over its row))`` -- so each row
masks at least one position (its smallest ``u``), which for text may fall on a non-answer position
and leave the row without a target, as upstream's. Text: only answer tokens (labels != -100) are
eligible, none in the rows of plan samples drawn to stay unmasked (``do_not_mask_text``, kept with
probability ``plan_unmasked_prob``). Images: an independent ``t`` per generated image over its VQ
ids. Upstream's complementary masking is off in every released stage (``SKIP_COMPLEMENTARY_MASKING``)
and is not implemented.

Drops. With probability ``prompt_drop`` per sample, every non-answer position that is not an
image slot (system, user turn, headers, understanding images, the rows the image expansion
appends) takes the text ``[MASK]`` embedding; when the batch has edit sources, their slots are not
part of the prompt but are dropped separately with probability ``edit_source_drop`` per sample,
into the text ``[MASK]`` embedding of the text tower (upstream's ``image_enc_drop_rate``).

Losses (upstream's normalisation). Text: the mean cross-entropy over every masked answer token of
the micro-batch (0 when there is none; no 1/t weighting). Images: the mean cross-entropy over every
masked VQ position of the micro-batch, optionally weighted by the edited area. A micro-batch's size
does not enter either mean.

Every random number of a micro-batch is in one :class:`MaskDraws`, drawn from a ``generator`` the
trainer seeds per micro-batch (so a resumed run draws the same masks), or given explicitly (tests
reproduce upstream's masks exactly that way).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Literal, Mapping

import torch
import torch.nn.functional as F

IGNORE = -100
EPS = 1e-3
TimePolicy = Literal["uniform", "cosine", "logit_normal"]


def sample_times(n: int, policy: TimePolicy, *, device=None, mean: float = 0.0, std: float = 1.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` diffusion times in [0, 1]."""
    if policy == "uniform":
        return torch.rand(n, device=device, generator=generator)
    if policy == "cosine":
        return torch.cos(math.pi * torch.rand(n, device=device, generator=generator) / 2).clip(0, 1)
    if policy == "logit_normal":
        return torch.sigmoid(torch.randn(n, device=device, generator=generator) * std + mean)
    raise ValueError(f"unknown time policy {policy!r}")


@dataclass
class MaskDraws:
    """Every random number of one micro-batch's masking.

    ``t_text`` [B] times, ``u_text`` [B, L] uniforms per position, ``u_prompt`` / ``u_enc`` /
    ``u_keep`` [B] uniforms compared with ``prompt_drop`` / ``edit_source_drop`` /
    ``plan_unmasked_prob``, ``t_img`` [N] times and ``u_img`` [N, h * w] uniforms of the generated
    images (batch-major, row-major ids).
    """

    t_text: torch.Tensor
    u_text: torch.Tensor
    u_prompt: torch.Tensor
    u_enc: torch.Tensor
    u_keep: torch.Tensor
    t_img: torch.Tensor
    u_img: torch.Tensor

    @classmethod
    def draw(cls, n: int, length: int, n_img: int, img_tokens: int, policy: TimePolicy, *,
             generator: torch.Generator | None = None, device=None, mean: float = 0.0,
             std: float = 1.0) -> "MaskDraws":
        def rand(*shape):
            return torch.rand(shape, device=device, generator=generator)

        times = dict(policy=policy, device=device, mean=mean, std=std, generator=generator)
        return cls(
            t_text=sample_times(n, **times), u_text=rand(n, length), u_prompt=rand(n), u_enc=rand(n),
            u_keep=rand(n), t_img=sample_times(n_img, **times), u_img=rand(n_img, img_tokens),
        )

    @classmethod
    def coerce(cls, value: "MaskDraws | Mapping[str, Any]", device=None) -> "MaskDraws":
        """A :class:`MaskDraws` from itself or a mapping of its fields (lists or tensors), on ``device``."""
        get = (lambda k: getattr(value, k)) if isinstance(value, MaskDraws) else value.__getitem__
        return cls(**{f.name: torch.as_tensor(get(f.name), dtype=torch.float32, device=device) for f in fields(cls)})


def mask_probability(t: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    return (1 - eps) * t + eps


def threshold_mask(u: torch.Tensor, t: torch.Tensor, eligible: torch.Tensor | None = None,
                   eps: float = EPS) -> torch.Tensor:
    """Upstream's ``forward_process``: ``u`` [R, ...] uniforms, ``t`` [R] times -> positions with
    ``u <= max(p, min(u over the row))`` (each row's smallest ``u`` always), and ``eligible``."""
    rows = u.reshape(len(u), -1)
    cutoff = torch.maximum(mask_probability(t.to(u.dtype), eps), rows.min(1).values if rows.shape[1] else t * 0)
    masked = (rows <= cutoff[:, None]).reshape(u.shape)
    return masked if eligible is None else masked & eligible


def revert_padding_labels(input_ids: torch.Tensor, labels: torch.Tensor, eos_id: int | None) -> torch.Tensor:
    """Labels with every end-of-text position a target (upstream: ``labels[input_ids == eos] = eos``)."""
    if eos_id is None:
        return labels
    return torch.where(input_ids == eos_id, torch.full_like(labels, eos_id), labels)


def mask_text(input_ids: torch.Tensor, labels: torch.Tensor, t: torch.Tensor, u: torch.Tensor, mask_id: int,
              keep: torch.Tensor | None = None, infill_id: int | None = None, eps: float = EPS,
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked input ids, positions to predict): answer positions (labels != -100, not the infill
    token) selected by :func:`threshold_mask`; ``keep`` rows get none."""
    eligible = labels != IGNORE
    if infill_id is not None:
        eligible = eligible & (labels != infill_id)
    if keep is not None:
        eligible = eligible & ~keep.view(-1, 1)
    masked = threshold_mask(u, t, eligible, eps)
    return input_ids.masked_fill(masked, mask_id), masked


def mask_image(ids: torch.Tensor, t: torch.Tensor, u: torch.Tensor, mask_id: int,
               eps: float = EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """VQ ids [N, h, w], times [N], uniforms [N, h * w] -> (masked ids, positions to predict)."""
    masked = threshold_mask(u.reshape(ids.shape), t, None, eps)
    return ids.masked_fill(masked, mask_id), masked


def drop_positions(labels: torch.Tensor, gen_mask: torch.Tensor, gen_enc_mask: torch.Tensor,
                   prompt_rows: torch.Tensor, enc_rows: torch.Tensor | None) -> torch.Tensor:
    """Positions that take the text mask embedding: the prompt (non-answer, non-slot) of
    ``prompt_rows``, and the edit-source slots of ``enc_rows`` (None: the batch has no edit source)."""
    prompt = (labels == IGNORE) & ~gen_mask & ~gen_enc_mask & prompt_rows.view(-1, 1)
    if enc_rows is None:
        return prompt
    return prompt | (gen_enc_mask & enc_rows.view(-1, 1))


def text_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``logits`` [M, V] against ``targets`` [M] (the masked answer tokens of
    the micro-batch); 0 (still in the graph) when M = 0."""
    if targets.numel() == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), targets)


def image_loss(logits: torch.Tensor, ids: torch.Tensor, masked: torch.Tensor,
               weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy over masked VQ positions; ``weights`` [N,h,w] are renormalised per image
    over its masked tokens (so an image's total weight is its count of masked tokens), as upstream's
    edit reweighting."""
    if not masked.any():
        return logits.sum() * 0.0
    ce = F.cross_entropy(logits[masked].float(), ids[masked], reduction="none")
    if weights is None:
        return ce.mean()
    w = weights * masked
    per_image = w.flatten(1).sum(1).clamp_min(1e-12)
    w = w * (masked.flatten(1).sum(1) / per_image).view(-1, 1, 1)
    return (ce * w[masked]).sum() / masked.sum()
