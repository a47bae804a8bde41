"""LaViDa-O: the LLaDA dual-tower backbone with its understanding and generation paths.

Key layout (``LavidaO.state_dict()``; the released checkpoint's names, see
:mod:`lavida_train.model.mapping`)::

    model.transformer.wte.weight                      [V, d]
    model.transformer.blocks.{i}.{attn_norm, ff_norm}.weight                      [d]
    model.transformer.blocks.{i}.{q_proj, k_proj, v_proj, attn_out}.weight        [d, d]
    model.transformer.blocks.{i}.{ff_proj, up_proj}.weight                        [mlp, d]
    model.transformer.blocks.{i}.ff_out.weight                                    [d, mlp]
    model.transformer.blocks.{i}.{attn_norm_vision, ff_norm_vision}.weight        [gw]
    model.transformer.blocks.{i}.{q_proj_vision, k_proj_vision, v_proj_vision}.weight  [d, gw]
    model.transformer.blocks.{i}.{ff_proj_vision, up_proj_vision}.weight          [gmlp, gw]
    model.transformer.blocks.{i}.ff_out_vision.weight                             [gw, gmlp]
    model.transformer.ln_f.weight                     [d]
    model.transformer.ff_out.weight                   [V, d]        (LM head, untied)
    model.vision_tower.vision_tower.vision_model.*    SigLIP (HF names), last layer removed, no head
    model.vision_resampler.pool.{weight, bias}        [h, h, 2, 2], [h]
    model.mm_projector.{0, 2}.{weight, bias}          [d, h], [d]; [d, d], [d]
    model.image_newline                               [d]
    model.gen_embedding.{0, 1, 2}.weight              [codebook + 256, gw], [gw], [gw, gw]
    model.downsample_gen.downsample.{norm, conv}.weight   [gw], [gw, gw, 2, 2]
    model.gen_embedding_2.{0, 1}.weight               [gw], [gw, gw]
    model.gen_predictor_2.{0, 1}.weight               [gw], [gw, gw]
    model.upsample_gen.upsample.{norm, conv}.weight   [gw], [gw, gw, 2, 2]
    model.gen_predictor.{0, 1, 2}.weight              [gw, gw], [gw], [codebook, gw]
    vq.model.*                                        the frozen VQ-VAE (the release's model.vqvae.*)

Forward (see :meth:`LavidaO.forward`): text ids are embedded by ``wte``; generated images' VQ ids
(``gen_ids``) and edit sources' (``enc_ids``) are embedded by the generation modules and written
into the ``gen_mask`` / ``gen_enc_mask`` slots in order (batch-major, then position); positions
of ``embed_mask`` get the ``text_mask_id`` embedding; each ``-200`` placeholder is then expanded
into its image's projected SigLIP features. The sequence grows; as upstream, a sample that ends
up shorter than the longest gets zero rows appended (the text mask embedding instead when its
prompt is dropped: ``prompt_dropped``), and every row is attended, padding included (upstream
runs without an attention mask). The backbone runs with ``modality = gen_mask |
(gen_enc_mask if enc_use_image_branch)`` (minus dropped positions); the final hidden states are
gathered back to the original positions for the text logits, and the generated images' positions
go through the prediction head for the image logits.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .gen import GEN_MODULES, build_gen_modules, embed_image_ids, predict_image_logits, resolve_merge
from .layers import RMSNorm
from .llada import LLaDABlock, LLaDATransformer
from .vision import (
    ANYRES_TILES,
    SiglipTower,
    build_projector,
    build_resampler,
    encode_crops,
    infer_grid,
    init_avg_pool_,
    merge_anyres,
)
from .vq import FrozenVQ

IMAGE_TOKEN_INDEX = -200  # lavida_data.transforms.tokenizer.IMAGE_TOKEN_INDEX

#: parameter groups of the reference's "Stages: what trains" table (see :meth:`LavidaO.param_groups`)
GROUPS = ("vision_tower", "projector", "resampler", "language_model", "generation_branch")
_GEN_MARKERS = ("_vision", "gen_embedding", "gen_predictor", "_gen")


class LavidaOModel(nn.Module):
    """The ``model.`` namespace: backbone, understanding path, generation modules."""

    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        mm_hidden = cfg.mm_hidden or cfg.siglip.hidden_size
        if mm_hidden != cfg.siglip.hidden_size:
            raise ValueError(
                f"mm_hidden {mm_hidden} must equal siglip.hidden_size {cfg.siglip.hidden_size} "
                "(the resampler keeps SigLIP's width)"
            )
        self.transformer = LLaDATransformer(cfg, vocab_size)
        self.vision_tower = SiglipTower(cfg.siglip)
        self.vision_resampler = build_resampler(cfg.siglip.hidden_size)
        self.mm_projector = build_projector(mm_hidden, cfg.d_model)
        self.image_newline = nn.Parameter(torch.randn(cfg.d_model) / cfg.d_model**0.5)
        for name, module in build_gen_modules(cfg).items():
            self.add_module(name, module)


class LavidaO(nn.Module):
    """LaViDa-O: ``model`` (:class:`LavidaOModel`, checkpointed) and ``vq`` (:class:`FrozenVQ`)."""

    def __init__(
        self,
        cfg: ModelConfig,
        vocab_size: int | None = None,
        anyres_grid: Sequence[tuple[int, int]] | None = None,
        anyres_tile: int | None = None,
    ):
        super().__init__()
        vocab = cfg.vocab_size if vocab_size is None else vocab_size
        if vocab <= 0:
            raise ValueError("vocab_size is unset (the tiny preset takes it from its tokenizer): pass vocab_size")
        self.config = cfg.model_copy(update={"vocab_size": vocab})
        self.model = LavidaOModel(self.config, vocab)
        self.vq = FrozenVQ(cfg.vq)
        side = cfg.siglip.image_size
        #: anyres pinpoints (W, H) in pixels, to recover an image's tile grid (see vision.infer_grid);
        #: default the reference's, at this SigLIP's crop size
        self.anyres_grid: list[tuple[int, int]] = (
            [(int(w), int(h)) for w, h in anyres_grid] if anyres_grid is not None
            else [(c * side, r * side) for c, r in ANYRES_TILES]
        )
        #: the pinpoints' tile side (default the SigLIP crop size); upstream's model reads the grid
        #: at 384 whatever the tower (its tower reports the so400m default)
        self.anyres_tile: int = int(anyres_tile) if anyres_tile else side
        if cfg.activation_checkpointing:
            self.model.vision_tower.vision_tower.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_config(
        cls,
        cfg: ModelConfig,
        vocab_size: int | None = None,
        *,
        seed: int | None = None,
        anyres_grid: Sequence[tuple[int, int]] | None = None,
        anyres_tile: int | None = None,
    ) -> "LavidaO":
        """Build from ``cfg`` (``vocab_size`` overrides ``cfg.vocab_size``).

        With ``seed`` the build is reproducible (bit-identical for equal seeds) and leaves the
        global RNG untouched: construction runs under a forked CPU RNG seeded with ``seed``, then
        :meth:`reset_parameters` re-initialises our own modules from a local generator. Pretrained
        SigLIP / VQ weights (``path`` set) are kept. ``cfg.checkpoint`` is not loaded here (see
        :func:`lavida_train.checkpoint.load_checkpoint`).
        """
        if seed is None:
            return cls(cfg, vocab_size, anyres_grid, anyres_tile)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls(cfg, vocab_size, anyres_grid, anyres_tile)
        model.reset_parameters(torch.Generator().manual_seed(seed))
        return model

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None, std: float = 0.02) -> None:
        """Re-initialise the backbone, projector, resampler, newline and generation modules.

        Linear / embedding / conv weights ~ N(0, ``std``), biases 0, norm weights 1, resampler =
        average pooling, ``image_newline`` ~ N(0, 1 / d_model). SigLIP and the VQ-VAE are left alone.
        """
        m = self.model
        for name, module in m.named_modules():
            if name.startswith("vision_tower") or name.startswith("vision_resampler"):
                continue
            if isinstance(module, (nn.Linear, nn.Embedding, nn.Conv2d, nn.ConvTranspose2d)):
                module.weight.normal_(0.0, std, generator=generator)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
            elif isinstance(module, RMSNorm):
                module.weight.fill_(1.0)
        init_avg_pool_(m.vision_resampler.pool)
        m.image_newline.normal_(0.0, self.config.d_model**-0.5, generator=generator)

    def train(self, mode: bool = True) -> "LavidaO":
        super().train(mode)
        self.vq.eval()
        return self

    # ------------------------------------------------------------------ parameter groups

    def param_groups(self) -> dict[str, list[str]]:
        """Parameter names per group of the reference's "Stages: what trains" table.

        ``vision_tower`` (``model.vision_tower.*``), ``projector`` (``model.mm_projector.*``),
        ``resampler`` (``model.vision_resampler.*``), ``language_model`` (every other parameter of
        ``model``: backbone, ``image_newline``, generation branch), ``generation_branch`` (the
        language-model names containing ``_vision``, ``gen_embedding``, ``gen_predictor`` or
        ``_gen``; a subset of ``language_model``). The VQ-VAE is in no group.
        """
        groups: dict[str, list[str]] = {g: [] for g in GROUPS}
        for name, _ in self.named_parameters():
            if name.startswith("vq."):
                continue
            if name.startswith("model.vision_tower."):
                groups["vision_tower"].append(name)
            elif name.startswith("model.mm_projector."):
                groups["projector"].append(name)
            elif name.startswith("model.vision_resampler."):
                groups["resampler"].append(name)
            else:
                groups["language_model"].append(name)
                if any(marker in name for marker in _GEN_MARKERS):
                    groups["generation_branch"].append(name)
        return groups

    def set_trainable(self, groups: Iterable[str]) -> list[str]:
        """``requires_grad`` True exactly for the parameters of ``groups`` (names from
        :data:`GROUPS`, or ``"all"``); the VQ-VAE stays frozen. Returns the trainable names."""
        groups = list(groups)
        table = self.param_groups()
        unknown = [g for g in groups if g != "all" and g not in table]
        if unknown:
            raise ValueError(f"unknown parameter groups {unknown}; known: {list(GROUPS)} or 'all'")
        names = set()
        for g in groups:
            names |= {n for gl in table.values() for n in gl} if g == "all" else set(table[g])
        for name, p in self.named_parameters():
            p.requires_grad_(name in names)
        return [n for n, _ in self.named_parameters() if n in names]

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        gen_ids: torch.Tensor | None = None,
        gen_mask: torch.Tensor | None = None,
        enc_ids: torch.Tensor | None = None,
        gen_enc_mask: torch.Tensor | None = None,
        und_pixels: list[list[torch.Tensor]] | None = None,
        und_sizes: list[list[tuple[int, int]]] | None = None,
        embed_mask: torch.Tensor | None = None,
        text_mask_id: int | None = None,
        prompt_dropped: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        merge: bool | None = None,
        und_grids: list[list[tuple[int, int] | None]] | None = None,
        compute_text_logits: bool = True,
        return_expanded: bool = False,
        text_logits_at: torch.Tensor | None = None,
        zero_anchor: bool = False,
    ) -> dict[str, torch.Tensor | None]:
        """Run the model on one batch.

        Args:
            input_ids: [B, L] text ids; masked text holds the mask id, slots hold the slot ids,
                understanding images are one ``-200`` each.
            gen_ids: [N_gen, h, w] VQ ids of the generated images (masked = ``image_mask_id``),
                in slot order; ``gen_mask`` [B, L] marks their slots (h * w each, or
                (h / 2) * (w / 2) merged).
            enc_ids, gen_enc_mask: the same for edit sources.
            und_pixels: per sample, per ``-200`` (in order), SigLIP crops [n, 3, S, S] (base first).
            und_sizes: per sample, per image, the original (w, h) (anyres unpadding / tile grid).
            embed_mask: [B, L] positions that get the ``text_mask_id`` embedding instead (prompt
                drop; dropped edit sources); at a ``-200`` it covers all of that image's features;
                never on ``gen_mask``. Edit-source slots under it become text-mask tokens of the
                text tower (upstream's dropped edit source).
            prompt_dropped: [B] bool, samples whose prompt is dropped: the rows appended to them
                by the image expansion hold the text mask embedding instead of zeros (upstream's
                prompt drop covers every non-answer row).
            attention_mask: [B, L] optional key padding mask (1 / True = a real token); default:
                every position may be attended (upstream's model runs without one). Rows appended
                by the image expansion are always attended, as upstream's.
            merge: force the 2 x 2 VQ merge on / off; default: merge grids with a side > 32.
            und_grids: per sample, per image, the anyres tile grid (rows, cols); default inferred.
            compute_text_logits: False skips the LM head (``text_logits`` is then None; apply
                ``self.model.transformer.logits`` to the rows of ``hidden`` you need).
            text_logits_at: [B, L] bool: ``text_logits`` is the LM head on those positions only
                ([M, V], in row-major order): the loss's positions, inside this forward so that a
                sharded (FSDP) LM head is gathered for it.
            zero_anchor: also return ``anchor``, a zero that depends on every trainable parameter
                a step may leave unused (:meth:`zero_anchor`): added to the loss, it gives those
                parameters a (zero) gradient in every step, under DDP and FSDP alike.
            return_expanded: also return ``expanded_hidden`` [B, L', d_model] (the final hidden
                states of the grown sequence), ``expanded_ids`` [B, L'] (the ids, ``-200`` on image
                features, ``-100`` on appended rows: upstream's ``new_input_ids``) and ``pos_map``
                [B, L] (each original position's row; a placeholder maps to its first feature).

        Returns:
            ``text_logits`` [B, L, V] aligned with ``input_ids`` (meaningless at ``-200`` and image
            slots), ``image_logits`` [N_gen, h, w, codebook] or None, ``hidden`` [B, L, d_model] the
            final hidden states (after ``ln_f``) aligned with ``input_ids``.
        """
        m, cfg = self.model, self.config
        tr = m.transformer
        b, n = input_ids.shape
        device = input_ids.device
        zeros = torch.zeros(b, n, dtype=torch.bool, device=device)
        gen_mask = zeros if gen_mask is None else gen_mask.bool()
        gen_enc_mask = zeros if gen_enc_mask is None else gen_enc_mask.bool()
        embed_mask = None if embed_mask is None else embed_mask.bool()

        embeds = tr.wte(input_ids.clamp(min=0))
        d = embeds.shape[-1]
        gen_grid = None
        gen_merge = False
        if gen_ids is not None or bool(gen_mask.any()):
            gen_grid, gen_merge = _grid(gen_ids, "gen_ids", merge)
            embeds = self._scatter_images(embeds, gen_ids, gen_mask, gen_merge, "gen")
        if enc_ids is not None or bool(gen_enc_mask.any()):
            _, enc_merge = _grid(enc_ids, "enc_ids", merge)
            embeds = self._scatter_images(embeds, enc_ids, gen_enc_mask, enc_merge, "enc")
        modality = gen_mask | gen_enc_mask if cfg.enc_use_image_branch else gen_mask.clone()

        mask_emb = None
        needs_mask = (embed_mask is not None and bool(embed_mask.any())) or (
            prompt_dropped is not None and bool(prompt_dropped.any()))
        if needs_mask:
            if text_mask_id is None:
                raise ValueError("embed_mask / prompt_dropped need text_mask_id (the text mask token's id)")
            mask_emb = tr.wte(torch.tensor(text_mask_id, device=device)).to(embeds.dtype)
        if embed_mask is not None and bool(embed_mask.any()):
            if bool((embed_mask & gen_mask).any()):
                raise ValueError("embed_mask covers generated-image slots (gen_mask); prompt drop must leave them")
            embeds = torch.where(embed_mask[..., None], mask_emb, embeds)
            modality = modality & ~embed_mask

        key_mask = None if attention_mask is None else attention_mask.bool()
        placeholders = input_ids == IMAGE_TOKEN_INDEX
        if bool(placeholders.any()) or und_pixels is not None and any(len(x) for x in und_pixels):
            grown = self._expand_images(
                embeds, modality, key_mask, placeholders, und_pixels, und_sizes, und_grids, embed_mask, mask_emb,
                prompt_dropped,
            )
            embeds, modality, key_mask, pos_map, lengths = grown
        else:
            pos_map = lengths = None

        full = tr(embeds, modality, key_mask)
        hidden = full if pos_map is None else full.gather(1, pos_map[..., None].expand(b, n, d))
        if text_logits_at is not None:
            text_logits = tr.logits(hidden[text_logits_at.bool()])
        else:
            text_logits = tr.logits(hidden) if compute_text_logits else None
        out: dict[str, torch.Tensor | None] = {"text_logits": text_logits, "image_logits": None, "hidden": hidden}
        if zero_anchor:
            out["anchor"] = self.zero_anchor()
        if gen_grid is not None and gen_ids is not None and gen_ids.shape[0]:
            img = hidden[gen_mask][:, : cfg.gen_width].reshape(gen_ids.shape[0], -1, cfg.gen_width)
            out["image_logits"] = predict_image_logits(m, img, gen_grid, gen_merge)
        if return_expanded:
            if pos_map is None:
                pos_map = torch.arange(n, device=device).expand(b, n)
                lengths = [n] * b
            out["expanded_hidden"] = full
            out["pos_map"] = pos_map
            out["expanded_ids"] = _expanded_ids(input_ids, pos_map, lengths, full.shape[1])
        return out

    # ------------------------------------------------------------------ data parallelism

    def anchor_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters that a step may leave unused: every one outside the LLaDA
        blocks (vision tower, resampler, projector, newline, generation modules, up / down
        sampling, LM head) but the token embeddings and the final norm, which every position
        goes through. The blocks run both towers in every forward pass (on possibly empty row
        sets), so their parameters always take part; and under FSDP each block is its own unit,
        whose parameters only the block's own forward may touch. Modules that FSDP wrapped
        separately are skipped the same way."""
        out: list[nn.Parameter] = []
        tr = self.model.transformer
        always = (tr.wte, tr.ln_f)

        def walk(module: nn.Module) -> None:
            out.extend(p for p in module.parameters(recurse=False) if p.requires_grad)
            for child in module.children():
                inner = getattr(child, "_checkpoint_wrapped_module", child)
                if isinstance(inner, LLaDABlock) or type(child).__name__ == "FullyShardedDataParallel" \
                        or inner in always:
                    continue
                walk(child)

        walk(self.model)
        return out

    def zero_anchor(self) -> torch.Tensor:
        """``0 * sum(first element of each anchor parameter)``: a zero in the autograd graph of
        every parameter of :meth:`anchor_parameters` (so DDP reduces, and FSDP reduce-scatters,
        a zero gradient for those a step did not use, on every rank, and the optimizer steps
        them as upstream's DeepSpeed ZeRO-2 does: with a zero gradient)."""
        params = self.anchor_parameters()
        if not params:
            return self.model.image_newline.new_zeros(())
        return torch.stack([p.reshape(-1)[:1].sum().float() for p in params]).sum() * 0.0

    @staticmethod
    def fsdp_wrap_fn(module: nn.Module) -> bool:
        """Composer's FSDP wrap policy: each LLaDA block is a unit (it runs in every forward
        pass, so every rank gathers and reduces every unit in the same order); the rest
        (embeddings, LM head, understanding path, generation modules) is the root unit."""
        return isinstance(module, LLaDABlock)

    @staticmethod
    def activation_checkpointing_fn(module: nn.Module) -> bool:
        """Composer's FSDP activation checkpointing (``parallelism.fsdp.activation_checkpointing``):
        each LLaDA block is recomputed in the backward pass (upstream: ``--gradient_checkpointing``)."""
        return isinstance(module, LLaDABlock)

    # ------------------------------------------------------------------ helpers

    def _scatter_images(
        self, embeds: torch.Tensor, ids: torch.Tensor | None, mask: torch.Tensor, merge: bool, what: str
    ) -> torch.Tensor:
        """Embed ``ids`` [N, h, w] and write them, zero-padded to d_model, into ``mask``'s positions."""
        m = self.model
        mask_name = "gen_mask" if what == "gen" else "gen_enc_mask"
        ids_name = f"{what}_ids"
        counts = mask.sum(1).tolist()
        if ids is None:
            raise ValueError(f"{mask_name} marks {sum(counts)} slots but no {ids_name} were given")
        n_img, h, w = ids.shape
        per = (h // 2) * (w // 2) if merge else h * w
        if sum(counts) != n_img * per or any(c % per for c in counts):
            raise ValueError(
                f"{mask_name} marks {counts} slots per sample, but {ids_name} hold {n_img} image(s) of {h}x{w} ids = "
                f"{per} tokens each (merge={merge}): every image needs exactly {per} slots in its sample"
            )
        if n_img == 0:
            return embeds
        vals = embed_image_ids(m, ids.to(embeds.device), merge).reshape(-1, self.config.gen_width)
        vals = F.pad(vals, (0, embeds.shape[-1] - vals.shape[-1])).to(embeds.dtype)
        rows, cols = mask.nonzero(as_tuple=True)
        return embeds.index_put((rows, cols), vals)

    def _image_features(
        self,
        und_pixels: list[list[torch.Tensor]],
        und_sizes: list[list[tuple[int, int]]] | None,
        und_grids: list[list[tuple[int, int] | None]] | None,
    ) -> list[list[torch.Tensor]]:
        """Per sample, per image: its merged feature tokens [T, d_model]."""
        m = self.model
        crops = [c for sample in und_pixels for c in sample]
        if not crops:
            return [[] for _ in und_pixels]
        counts = [c.shape[0] for c in crops]
        feats = encode_crops(
            m.vision_tower, m.vision_resampler, m.mm_projector, torch.cat([c.to(m.image_newline.device) for c in crops])
        )
        per_image = iter(feats.split(counts))
        out = []
        for bi, sample in enumerate(und_pixels):
            toks = []
            for k in range(len(sample)):
                feats_k = next(per_image)
                size = _nth(und_sizes, bi, k)
                grid = _nth(und_grids, bi, k)
                if grid is None and feats_k.shape[0] > 1:
                    grid = infer_grid(feats_k.shape[0] - 1, size, self.anyres_grid, self.anyres_tile)
                toks.append(merge_anyres(feats_k, m.image_newline, size, grid))
            out.append(toks)
        return out

    def _expand_images(
        self,
        embeds: torch.Tensor,
        modality: torch.Tensor,
        key_mask: torch.Tensor | None,
        placeholders: torch.Tensor,
        und_pixels: list[list[torch.Tensor]] | None,
        und_sizes: list[list[tuple[int, int]]] | None,
        und_grids: list[list[tuple[int, int] | None]] | None,
        embed_mask: torch.Tensor | None,
        mask_emb: torch.Tensor | None,
        prompt_dropped: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor, list[int]]:
        """Replace each ``-200`` by its image's tokens; returns the grown embeddings, modality and
        key mask, ``pos_map`` [B, L]: the new index of every original position (a placeholder
        maps to its image's first token), and each sample's grown length. Rows appended to
        shorter samples are zeros (the text mask embedding for ``prompt_dropped`` samples), text
        modality, attended."""
        b, n, d = embeds.shape
        device = embeds.device
        if und_pixels is None or len(und_pixels) != b:
            raise ValueError(f"input_ids hold -200 placeholders: und_pixels must list {b} samples' images")
        places = [placeholders[i].nonzero().squeeze(1).tolist() for i in range(b)]
        for i, (p, imgs) in enumerate(zip(places, und_pixels)):
            if len(p) != len(imgs):
                raise ValueError(f"sample {i} has {len(p)} -200 placeholder(s) but {len(imgs)} und_pixels image(s)")
        feats = self._image_features(und_pixels, und_sizes, und_grids)

        seqs, mods, keys, maps = [], [], [], []
        for i in range(b):
            pieces, mod_pieces, key_pieces, new_pos = [], [], [], []
            cur = start = 0
            for k, p in enumerate(places[i]):
                pieces.append(embeds[i, start:p])
                mod_pieces.append(modality[i, start:p])
                key_pieces.append(_keys(key_mask, i, start, p, device))
                new_pos.append(torch.arange(cur, cur + p - start, device=device))
                cur += p - start
                f = feats[i][k].to(embeds.dtype)
                if mask_emb is not None and embed_mask is not None and bool(embed_mask[i, p]):
                    f = mask_emb.to(embeds.dtype).expand_as(f)
                pieces.append(f)
                mod_pieces.append(torch.zeros(f.shape[0], dtype=torch.bool, device=device))
                real = True if key_mask is None else bool(key_mask[i, p])
                key_pieces.append(torch.full((f.shape[0],), real, dtype=torch.bool, device=device))
                new_pos.append(torch.tensor([cur], device=device))
                cur += f.shape[0]
                start = p + 1
            pieces.append(embeds[i, start:])
            mod_pieces.append(modality[i, start:])
            key_pieces.append(_keys(key_mask, i, start, n, device))
            new_pos.append(torch.arange(cur, cur + n - start, device=device))
            seqs.append(torch.cat(pieces))
            mods.append(torch.cat(mod_pieces))
            keys.append(torch.cat(key_pieces))
            maps.append(torch.cat(new_pos))
        width = max(s.shape[0] for s in seqs)
        rows = []
        for i, s in enumerate(seqs):
            extra = width - s.shape[0]
            if extra and mask_emb is not None and prompt_dropped is not None and bool(prompt_dropped[i]):
                s = torch.cat((s, mask_emb.to(s.dtype).expand(extra, d)))
            rows.append(F.pad(s, (0, 0, 0, width - s.shape[0])))
        new_embeds = torch.stack(rows)
        new_mod = torch.stack([_pad_bool(x, width, False) for x in mods])
        new_keys = None if key_mask is None else torch.stack([_pad_bool(x, width, True) for x in keys])
        return new_embeds, new_mod, new_keys, torch.stack(maps), [int(x.shape[0]) for x in seqs]


def _grid(ids: torch.Tensor | None, name: str, merge: bool | None) -> tuple[tuple[int, int] | None, bool]:
    if ids is None:
        return None, False
    if ids.dim() != 3:
        raise ValueError(f"{name} must be [N, h, w], got shape {tuple(ids.shape)}")
    h, w = int(ids.shape[1]), int(ids.shape[2])
    return (h, w), resolve_merge(h, w, merge)


def _pad_bool(x: torch.Tensor, width: int, fill: bool) -> torch.Tensor:
    out = torch.full((width,), fill, dtype=torch.bool, device=x.device)
    out[: x.shape[0]] = x
    return out


def _keys(key_mask: torch.Tensor | None, i: int, start: int, stop: int, device) -> torch.Tensor:
    if key_mask is None:
        return torch.ones(stop - start, dtype=torch.bool, device=device)
    return key_mask[i, start:stop]


def _expanded_ids(input_ids: torch.Tensor, pos_map: torch.Tensor, lengths: list[int], width: int) -> torch.Tensor:
    """Upstream's ``new_input_ids``: the original ids at their new rows, ``-200`` on image features,
    ``-100`` on appended rows."""
    out = torch.full((input_ids.shape[0], width), -100, dtype=input_ids.dtype, device=input_ids.device)
    for i, length in enumerate(lengths):
        out[i, :length] = IMAGE_TOKEN_INDEX
        text = input_ids[i] != IMAGE_TOKEN_INDEX
        out[i, pos_map[i][text]] = input_ids[i][text]
    return out


def _nth(table: list[list] | None, i: int, k: int):
    if table is None or i >= len(table) or table[i] is None or k >= len(table[i]):
        return None
    v = table[i][k]
    return None if v is None else tuple(int(x) for x in v)


__all__ = ["GEN_MODULES", "GROUPS", "IMAGE_TOKEN_INDEX", "LavidaO", "LavidaOModel"]
