"""LaViDa-O as a Composer model: images to VQ ids, masking, the model, the objective."""

from __future__ import annotations

from typing import Any

import torch
from composer.models import ComposerModel

from . import objective as obj


class LavidaComposerModel(ComposerModel):
    """``forward`` masks the batch and runs the model; ``loss`` is text + image loss.

    ``train`` carries the stage's objective settings (time policy, text loss switch, prompt and
    edit-source drop, edit reweighting, plan samples). ``eos_id`` (LLaDA's end-of-text, the pad)
    makes every end-of-text position a target, and ``infill_id`` (``<|reserved_token_1|>``) is never
    masked nor predicted, as upstream's model does; None leaves the labels as the data gives them.
    The last micro-batch's losses, mask ratio, sample ids and length group are kept in ``last`` for
    logging. A batch's size varies with its length group (``batch_sizes`` factors); the losses are
    means over the masked tokens of the batch, as upstream's (its size does not enter them).

    A batch may carry ``mask_draws`` (a :class:`~lavida_train.objective.MaskDraws` or a mapping of
    its fields): then those numbers replace the seeded draws (used to reproduce upstream's masks);
    and ``gen_ids`` / ``enc_ids`` (VQ ids [N, h, w], batch-major) instead of the pixels.
    """

    def __init__(self, model: torch.nn.Module, *, text_mask_id: int, train: Any, seed: int = 0,
                 eos_id: int | None = None, infill_id: int | None = None):
        super().__init__()
        self.seed = seed
        self.model = model
        self.text_mask_id = text_mask_id
        self.eos_id = eos_id
        self.infill_id = infill_id
        self.train_cfg = train
        self.last: dict[str, Any] = {}

    @classmethod
    def for_tokenizer(cls, model: torch.nn.Module, tokenizer_dir: str, *, train: Any, seed: int = 0
                      ) -> "LavidaComposerModel":
        """With the token ids upstream's objective uses, from the tokenizer at ``tokenizer_dir``:
        the text mask, end-of-text (LLaDA's pad) and the infill token ``<|reserved_token_1|>``."""
        from lavida_data.transforms.tokenize import load_tokenizer
        from lavida_data.transforms.tokenizer import reserved_token

        tok, ids = load_tokenizer(tokenizer_dir)
        infill = tok.convert_tokens_to_ids(reserved_token(1))
        infill = infill if isinstance(infill, int) and infill != tok.unk_token_id else None
        return cls(model, text_mask_id=ids.mask, train=train, seed=seed, eos_id=ids.eos, infill_id=infill)

    # -- inputs -----------------------------------------------------------------------------
    def _gen_pixels(self, batch: dict) -> list[torch.Tensor]:
        """Generation targets, batch-major (each sample's list in order), as upstream flattens them."""
        px = batch.get("gen_pixels")
        if px is None:
            return []
        if isinstance(px, torch.Tensor):
            return list(px)
        out: list[torch.Tensor] = []
        for per in px:
            if per is None:
                continue
            out.extend([per] if isinstance(per, torch.Tensor) else per)
        return out

    def _enc_pixels(self, batch: dict) -> list[torch.Tensor]:
        return [p for per in batch.get("gen_enc_pixels") or [] for p in per]

    def _vq(self, pixels: list[torch.Tensor]) -> torch.Tensor | None:
        if not pixels:
            return None
        return self.model.vq.encode_ids(torch.stack(pixels))  # uint8 or float: converted on the device

    def draws(self, batch: dict, gen_ids: torch.Tensor | None) -> obj.MaskDraws:
        """The micro-batch's random numbers: ``batch["mask_draws"]`` when given, else drawn from
        :meth:`batch_generator`."""
        input_ids = batch["input_ids"]
        device = input_ids.device
        if batch.get("mask_draws") is not None:
            return obj.MaskDraws.coerce(batch["mask_draws"], device)
        n_img, tokens = (0, 0) if gen_ids is None else (gen_ids.shape[0], gen_ids[0].numel())
        return obj.MaskDraws.draw(
            input_ids.shape[0], input_ids.shape[1], n_img, tokens, self.train_cfg.time_policy,
            generator=self.batch_generator(batch, device), device=device, **self._tp())

    def stand_in(self, batch: dict) -> dict:
        """What an empty micro-batch (every sample skipped as bad) runs instead: one end-of-text
        token, no image, no target, the step's own keys. Its loss is multiplied by 0, but the
        model runs, so every rank runs the same modules in every step (FSDP gathers and reduces
        each unit on every rank; DDP reduces every gradient)."""
        device = batch["input_ids"].device
        token = self.eos_id if self.eos_id is not None else 0
        return {"input_ids": torch.full((1, 1), token, dtype=torch.long, device=device),
                "labels": torch.full((1, 1), obj.IGNORE, dtype=torch.long, device=device),
                "position": [], "epoch": batch.get("epoch"), "ids": [], "skipped": list(batch.get("skipped") or []),
                "group": batch.get("group"), "step": batch.get("step")}

    def forward(self, batch: dict) -> dict:
        cfg = self.train_cfg
        empty = batch["input_ids"].shape[0] == 0
        if empty:
            batch = self.stand_in(batch)
        input_ids = batch["input_ids"]
        device = input_ids.device
        n = input_ids.shape[0]
        labels = obj.revert_padding_labels(input_ids, batch["labels"], self.eos_id)
        gen_mask = batch.get("gen_mask", torch.zeros_like(input_ids, dtype=torch.bool))
        enc_mask = batch.get("gen_enc_mask", torch.zeros_like(input_ids, dtype=torch.bool))
        gen_ids = batch["gen_ids"] if batch.get("gen_ids") is not None else self._vq(self._gen_pixels(batch))
        enc_ids = batch["enc_ids"] if batch.get("enc_ids") is not None else self._vq(self._enc_pixels(batch))
        d = self.draws(batch, gen_ids)
        # upstream's do_not_mask_text (layout-planning answers): kept unmasked with probability
        # plan_unmasked_prob (0.8 upstream)
        plan = torch.tensor([bool(p) for p in batch.get("do_not_mask_text") or [False] * n], device=device)
        keep = plan & (d.u_keep < cfg.plan_unmasked_prob)
        eps = getattr(cfg, "min_mask", obj.EPS)
        masked_input, text_masked = obj.mask_text(input_ids, labels, d.t_text, d.u_text, self.text_mask_id, keep,
                                                  self.infill_id, eps)
        out: dict[str, Any] = {"text_masked": text_masked, "labels": labels, "empty": empty}
        masked_gen = None
        if gen_ids is not None:
            masked_gen, out["image_masked"] = obj.mask_image(gen_ids, d.t_img, d.u_img,
                                                             self.model.config.image_mask_id, eps)
            out["gen_ids"] = gen_ids
            out["image_weights"] = self._edit_weights(batch, gen_ids)
        prompt_rows = d.u_prompt < cfg.prompt_drop
        enc_rows = None if enc_ids is None else d.u_enc < cfg.edit_source_drop
        embed_mask = obj.drop_positions(labels, gen_mask, enc_mask, prompt_rows, enc_rows)
        result = self.model(
            masked_input, gen_ids=masked_gen, gen_mask=gen_mask, enc_ids=enc_ids, gen_enc_mask=enc_mask,
            und_pixels=batch.get("und_pixels"), und_sizes=batch.get("und_sizes"), embed_mask=embed_mask,
            text_mask_id=self.text_mask_id, prompt_dropped=prompt_rows, compute_text_logits=False,
            # the LM head only where a loss is taken (upstream computes it everywhere: same values)
            text_logits_at=text_masked, zero_anchor=True,
        )
        out.update(result)
        return out

    def batch_generator(self, batch: dict, device) -> torch.Generator:
        """The micro-batch's generator, seeded from the seed, the epoch and its samples' positions
        in the global order: the same draws after a resume, for any world size or worker count."""
        import hashlib

        positions = sorted(int(p) for p in batch.get("position") or [])
        epochs = sorted({int(e) for e in batch.get("epoch") or [0]})
        key = f"{self.seed}/{epochs}/{positions}".encode()
        seed = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") & ((1 << 63) - 1)
        return torch.Generator(device=device).manual_seed(seed)

    def _tp(self) -> dict:
        cfg = self.train_cfg
        return {"mean": getattr(cfg, "logit_normal_mean", 0.0), "std": getattr(cfg, "logit_normal_std", 1.0)}

    def _edit_weights(self, batch: dict, gen_ids: torch.Tensor) -> torch.Tensor | None:
        """Per-token weights of the generation targets from the data's ``gen_weight`` (upstream's
        ``image_gen_weight``: the edit-area masks of ``reweight`` samples, ones for the other targets
        of such samples), batch-major like the targets; None when no sample has any."""
        per_sample = batch.get("gen_weight") or []
        if not self.train_cfg.edit_reweight or not any(len(w) for w in per_sample if w is not None):
            return None
        weights = torch.ones(gen_ids.shape, device=gen_ids.device)
        gen_i = 0
        for k, per in enumerate(batch.get("gen_pixels") or []):
            n_gen = len(per) if isinstance(per, (list, tuple)) else int(per is not None)
            ws = per_sample[k] if k < len(per_sample) and per_sample[k] is not None else []
            for j in range(n_gen):
                if j < len(ws):
                    weights[gen_i + j] = ws[j].to(weights).reshape(gen_ids.shape[1:])
            gen_i += n_gen
        return weights

    # -- loss -------------------------------------------------------------------------------
    def loss(self, outputs: dict, batch: dict) -> torch.Tensor:
        """Text loss (when ``train.text_loss``) + image loss + the model's zero anchor (every
        trainable parameter in the graph: see :meth:`LavidaO.zero_anchor`); an empty micro-batch's
        (its stand-in's) loss times 0."""
        labels = outputs["labels"]
        tl = obj.text_loss(outputs["text_logits"], labels[outputs["text_masked"]])
        if "image_logits" in outputs and outputs.get("gen_ids") is not None:
            il = obj.image_loss(outputs["image_logits"], outputs["gen_ids"], outputs["image_masked"],
                                outputs.get("image_weights"))
        else:
            il = outputs["text_logits"].sum() * 0.0
        total = (tl if self.train_cfg.text_loss else tl.detach() * 0.0) + il
        if outputs.get("anchor") is not None:
            total = total + outputs["anchor"]
        if outputs.get("empty"):
            total = total * 0.0
            self.last = {"loss": 0.0, "text_loss": 0.0, "image_loss": 0.0, "mask_ratio": 0.0,
                         "image_mask_ratio": None, "sample_ids": [], "skipped": list(batch.get("skipped") or []),
                         "group": batch.get("group")}
            return total
        answer = (labels != obj.IGNORE).sum().clamp_min(1)
        self.last = {
            "loss": float(total.detach()),
            "text_loss": float(tl.detach()),
            "image_loss": float(il.detach()),
            "mask_ratio": float(outputs["text_masked"].sum() / answer),
            "image_mask_ratio": float(outputs["image_masked"].float().mean()) if "image_masked" in outputs else None,
            "sample_ids": list(batch.get("ids") or []),
            "skipped": list(batch.get("skipped") or []),
            "group": batch.get("group"),
        }
        return total

    def eval_forward(self, batch: dict, outputs: Any | None = None) -> Any:
        return outputs if outputs is not None else self.forward(batch)

    def get_metrics(self, is_train: bool = False) -> dict:
        return {}
