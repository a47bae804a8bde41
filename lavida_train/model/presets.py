"""Ready-made models: :func:`tiny_model` (the ``tiny`` preset, seconds on a CPU)."""

from __future__ import annotations

from .config import ModelConfig, tiny_config
from .lavida import LavidaO


def tokenizer_vocab_size(tokenizer_dir: str) -> int:
    """Rows the embedding needs for the tokenizer at ``tokenizer_dir``: ``len(tokenizer)``."""
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(tokenizer_dir))


def tiny_model(
    tokenizer_dir: str, seed: int = 0, anyres_grid: list[tuple[int, int]] | None = None, **overrides
) -> tuple[LavidaO, ModelConfig]:
    """A :func:`~lavida_train.model.config.tiny_config` model (``overrides`` go to it; ``anyres_grid``
    is the data side's pinpoints in pixels, default the reference's at 56 px) whose
    vocabulary is the tokenizer's length; returns the model and its config (``vocab_size`` and
    ``tokenizer`` filled). Equal seeds give bit-identical weights; the global RNG is untouched."""
    cfg = tiny_config(**overrides)
    cfg = cfg.model_copy(update={"vocab_size": tokenizer_vocab_size(tokenizer_dir), "tokenizer": str(tokenizer_dir)})
    model = LavidaO.from_config(cfg, seed=seed, anyres_grid=anyres_grid)
    return model, model.config
