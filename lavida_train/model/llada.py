"""The LLaDA backbone with LaViDa-O's Elastic-MoT dual tower.

Names follow the reference (under ``model.transformer.`` once assembled in
:class:`~lavida_train.model.lavida.LavidaO`): ``wte``, ``blocks.{i}``, ``ln_f``, ``ff_out``; each
block holds the text weights ``attn_norm``, ``q_proj``, ``k_proj``, ``v_proj``, ``attn_out``,
``ff_norm``, ``ff_proj``, ``up_proj``, ``ff_out`` and the image-token weights
``attn_norm_vision``, ``ff_norm_vision`` [gen_width], ``q_proj_vision``, ``k_proj_vision``,
``v_proj_vision`` (gen_width -> d_model), ``ff_proj_vision``, ``up_proj_vision``
(gen_width -> gen_mlp_hidden), ``ff_out_vision`` (gen_mlp_hidden -> gen_width). No biases.

Routing. A boolean ``modality`` mask [B, L] (True = image token) splits the flattened sequence
into text rows (d_model wide) and image rows (the first gen_width dims of the residual; the rest
stays zero). Each branch has its own norms, Q/K/V and MLP; attention runs over the merged
sequence at n_heads x head_dim, and ``attn_out`` (d_model -> d_model) serves both: image rows keep
its first gen_width outputs. Both branches always run (on possibly empty row sets), so every
parameter is in the autograd graph of every step (no unused-parameter surprises under DDP).

Attention is bidirectional, without dropout, via ``scaled_dot_product_attention``. Layers
``0..dual_tower_layers`` (inclusive) are *joint* (every token sees every token); later layers see
only tokens of their own modality. Rotary positions are the absolute sequence positions in every
layer. :func:`build_attention_mask` makes the boolean mask [B, 1, L, L] (True = may attend) from
the modality rule and an optional key padding mask.

The image-branch norms inside the blocks use the blocks' ``norm_eps`` (1e-5), like their text
twins (upstream builds every LLaDA norm with ``rms_norm_eps``). Upstream computes a split layer's
attention per modality over its own rows packed left, at their original positions, with flash
attention; the same-modality mask over the whole row gives the same result.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import ModelConfig
from .layers import RMSNorm, RotaryEmbedding, apply_rotary, swiglu


@dataclass
class Routing:
    """Flat row indices of the text and image tokens of a [B, L] sequence (``modality`` True = image)."""

    text: torch.Tensor
    image: torch.Tensor
    rows: int

    @classmethod
    def from_modality(cls, modality: torch.Tensor) -> "Routing":
        flat = modality.reshape(-1).bool()
        return cls(
            text=(~flat).nonzero(as_tuple=False).squeeze(1),
            image=flat.nonzero(as_tuple=False).squeeze(1),
            rows=flat.numel(),
        )

    def merge(self, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Rows ``text`` [Nt, D] and ``image`` [Ni, D] back in sequence order: [rows, D]."""
        out = text.new_zeros(self.rows, text.shape[-1])
        return out.index_copy(0, self.text, text).index_copy(0, self.image, image.to(text.dtype))


def build_attention_mask(
    modality: torch.Tensor, joint: bool, key_mask: torch.Tensor | None = None
) -> torch.Tensor | None:
    """Boolean attention mask [B, 1, L, L] (True = query i may attend key j), or None for "all".

    ``joint``: every token may attend every key; otherwise only keys of its own modality (text to
    text, image to image). ``key_mask`` [B, L] (True = a real token) removes padding keys.
    """
    mask = None
    if not joint:
        m = modality.bool()
        mask = (m[:, :, None] == m[:, None, :])[:, None]
    if key_mask is not None:
        keys = key_mask.bool()[:, None, None, :]
        mask = keys if mask is None else mask & keys
        mask = mask.expand(modality.shape[0], 1, modality.shape[1], modality.shape[1])
    return mask


class LLaDABlock(nn.Module):
    """One LLaDA layer with both towers (see the module docstring)."""

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        d, gw, eps = cfg.d_model, cfg.gen_width, cfg.norm_eps
        self.layer_idx = layer_idx
        self.joint = layer_idx <= cfg.dual_tower_layers
        self.n_heads, self.head_dim, self.gen_width = cfg.n_heads, cfg.head_dim, gw
        # text / understanding tower
        self.attn_norm = RMSNorm(d, eps)
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.ff_norm = RMSNorm(d, eps)
        self.ff_proj = nn.Linear(d, cfg.mlp_hidden, bias=False)
        self.up_proj = nn.Linear(d, cfg.mlp_hidden, bias=False)
        self.ff_out = nn.Linear(cfg.mlp_hidden, d, bias=False)
        # image tower (generation tokens, and edit sources when enc_use_image_branch)
        self.attn_norm_vision = RMSNorm(gw, eps)
        self.q_proj_vision = nn.Linear(gw, d, bias=False)
        self.k_proj_vision = nn.Linear(gw, d, bias=False)
        self.v_proj_vision = nn.Linear(gw, d, bias=False)
        self.ff_norm_vision = RMSNorm(gw, eps)
        self.ff_proj_vision = nn.Linear(gw, cfg.gen_mlp_hidden, bias=False)
        self.up_proj_vision = nn.Linear(gw, cfg.gen_mlp_hidden, bias=False)
        self.ff_out_vision = nn.Linear(cfg.gen_mlp_hidden, gw, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        routing: Routing,
        cos: torch.Tensor,
        sin: torch.Tensor,
        attn_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """``x`` [B, L, d_model] (image rows zero beyond gen_width) -> same shape."""
        b, n, d = x.shape
        gw = self.gen_width
        flat = x.reshape(b * n, d)
        xt = flat.index_select(0, routing.text)
        xi = flat.index_select(0, routing.image)[:, :gw]

        ht, hi = self.attn_norm(xt), self.attn_norm_vision(xi)
        shape = (b, n, self.n_heads, self.head_dim)
        q = routing.merge(self.q_proj(ht), self.q_proj_vision(hi)).view(shape)
        k = routing.merge(self.k_proj(ht), self.k_proj_vision(hi)).view(shape)
        v = routing.merge(self.v_proj(ht), self.v_proj_vision(hi)).view(shape)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        att = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=attn_mask, dropout_p=0.0, is_causal=False
        )
        att = self.attn_out(att.transpose(1, 2).reshape(b, n, d)).reshape(b * n, d)

        xt = xt + att.index_select(0, routing.text)
        xi = xi + att.index_select(0, routing.image)[:, :gw]
        xt = xt + swiglu(self.ff_norm(xt), self.ff_proj, self.up_proj, self.ff_out)
        xi = xi + swiglu(self.ff_norm_vision(xi), self.ff_proj_vision, self.up_proj_vision, self.ff_out_vision)
        return routing.merge(xt, F.pad(xi, (0, d - gw))).view(b, n, d)


class LLaDATransformer(nn.Module):
    """``wte``, ``blocks``, ``ln_f``, ``ff_out`` (untied LM head).

    :meth:`forward` takes input embeddings (the caller builds them: text, image features, VQ
    embeddings) and returns the final hidden states after ``ln_f``; :meth:`logits` applies the
    LM head, so the caller may gather positions first.
    """

    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        if vocab_size <= 0:
            raise ValueError(f"vocab_size must be positive, got {vocab_size}")
        self.config = cfg
        self.wte = nn.Embedding(vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(LLaDABlock(cfg, i) for i in range(cfg.n_layers))
        self.ln_f = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.ff_out = nn.Linear(cfg.d_model, vocab_size, bias=False)
        self.rotary = RotaryEmbedding(cfg.head_dim, cfg.rope_theta)
        self.activation_checkpointing = cfg.activation_checkpointing

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        modality: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``inputs_embeds`` [B, L, d_model] -> hidden states after ``ln_f`` [B, L, d_model].

        ``modality`` [B, L] bool (True = image token, default all text); ``key_mask`` [B, L]
        (True = may be attended; default all); ``positions`` [L] or [B, L] rotary positions
        (default ``arange(L)``).
        """
        b, n, _ = inputs_embeds.shape
        device = inputs_embeds.device
        if modality is None:
            modality = torch.zeros(b, n, dtype=torch.bool, device=device)
        if positions is None:
            positions = torch.arange(n, device=device)
        cos, sin = self.rotary(positions)
        if cos.dim() == 2:  # [L, D] -> [1, L, 1, D]
            cos, sin = cos[None, :, None], sin[None, :, None]
        else:  # [B, L, D] -> [B, L, 1, D]
            cos, sin = cos[:, :, None], sin[:, :, None]
        routing = Routing.from_modality(modality)
        masks = {
            joint: build_attention_mask(modality, joint, key_mask)
            for joint in {blk.joint for blk in self.blocks}
        }
        x = inputs_embeds
        use_ckpt = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for blk in self.blocks:
            mask = masks[blk.joint]
            if use_ckpt:
                x = checkpoint(blk, x, routing, cos, sin, mask, use_reentrant=False)
            else:
                x = blk(x, routing, cos, sin, mask)
        return self.ln_f(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """LM logits of hidden states (already through ``ln_f``)."""
        return self.ff_out(hidden)
