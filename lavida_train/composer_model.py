"""LaViDa-O as a Composer model: images to VQ ids, masking, the model, the objective."""

from __future__ import annotations

from typing import Any

import torch
from composer.models import ComposerModel

from . import objective as obj


class LavidaComposerModel(ComposerModel):
    """``forward`` masks the batch and runs the model; ``loss`` is text + image loss.

    ``train`` carries the stage's objective settings (time policy, text loss switch, prompt and
    edit-source drop, edit reweighting, plan samples). The last micro-batch's losses, mask ratio,
    sample ids and length group are kept in ``last`` for logging. A batch's size varies with its
    length group (``batch_sizes`` factors); the losses are means over the batch, as upstream's.
    """

    def __init__(self, model: torch.nn.Module, *, text_mask_id: int, train: Any, seed: int = 0):
        super().__init__()
        self.seed = seed
        self.model = model
        self.text_mask_id = text_mask_id
        self.train_cfg = train
        self.last: dict[str, Any] = {}

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

    def forward(self, batch: dict) -> dict:
        cfg = self.train_cfg
        input_ids, labels = batch["input_ids"], batch["labels"]
        device = input_ids.device
        n = input_ids.shape[0]
        if n == 0:  # every sample of this micro-batch was bad: a zero loss that still syncs
            return {"empty": True}
        gen_mask = batch.get("gen_mask", torch.zeros_like(input_ids, dtype=torch.bool))
        enc_mask = batch.get("gen_enc_mask", torch.zeros_like(input_ids, dtype=torch.bool))
        g = self.batch_generator(batch, device)
        gen_px, enc_px = self._gen_pixels(batch), self._enc_pixels(batch)
        gen_ids, enc_ids = self._vq(gen_px), self._vq(enc_px)
        # upstream's do_not_mask_text (layout-planning answers): kept unmasked with probability
        # plan_unmasked_prob (0.8 upstream)
        plan = torch.tensor([bool(p) for p in batch.get("do_not_mask_text") or [False] * n], device=device)
        keep = plan & (torch.rand(n, device=device, generator=g) < cfg.plan_unmasked_prob)
        t_text = obj.sample_times(n, cfg.time_policy, device=device, generator=g, **self._tp())
        masked_input, text_masked = obj.mask_text(input_ids, labels, t_text, self.text_mask_id, keep, g)
        out: dict[str, Any] = {"text_masked": text_masked}
        masked_gen = None
        if gen_ids is not None:
            t_img = obj.sample_times(len(gen_ids), cfg.time_policy, device=device, generator=g, **self._tp())
            masked_gen, out["image_masked"] = obj.mask_image(gen_ids, t_img, self.model.config.image_mask_id, g)
            out["gen_ids"] = gen_ids
            out["image_weights"] = self._edit_weights(batch, gen_ids)
        if enc_ids is not None and cfg.edit_source_drop > 0:
            per_sample = [len(p) for p in batch.get("gen_enc_pixels") or []]
            drop = torch.rand(len(per_sample), device=device, generator=g) < cfg.edit_source_drop
            drop_per_image = torch.repeat_interleave(drop, torch.tensor(per_sample, device=device))
            enc_ids = enc_ids.masked_fill(drop_per_image.view(-1, 1, 1), self.model.config.image_mask_id)
        embed_mask = obj.prompt_drop(labels, gen_mask, enc_mask, cfg.prompt_drop, g)
        result = self.model(
            masked_input, gen_ids=masked_gen, gen_mask=gen_mask, enc_ids=enc_ids, gen_enc_mask=enc_mask,
            und_pixels=batch.get("und_pixels"), und_sizes=batch.get("und_sizes"), embed_mask=embed_mask,
            text_mask_id=self.text_mask_id,
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
        if outputs.get("empty"):
            zero = sum(p.sum() * 0.0 for p in self.parameters() if p.requires_grad)
            self.last = {"loss": 0.0, "text_loss": 0.0, "image_loss": 0.0, "mask_ratio": 0.0,
                         "image_mask_ratio": None, "sample_ids": [], "skipped": list(batch.get("skipped") or []),
                         "group": batch.get("group")}
            return zero
        labels = batch["labels"]
        tl = obj.text_loss(outputs["text_logits"], labels, outputs["text_masked"])
        if "image_logits" in outputs and outputs.get("gen_ids") is not None:
            il = obj.image_loss(outputs["image_logits"], outputs["gen_ids"], outputs["image_masked"],
                                outputs.get("image_weights"))
        else:
            il = outputs["text_logits"].sum() * 0.0
        total = (tl if self.train_cfg.text_loss else tl.detach() * 0.0) + il
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
