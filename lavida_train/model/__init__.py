"""LaViDa-O's model: the dual-tower LLaDA backbone, SigLIP understanding path, VQ generation path.

Import from the submodules, or lazily from here (``from lavida_train.model import LavidaO``);
importing this package alone does not import torch, so ``lavida_train.model.config`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LavidaO": "lavida",
    "LavidaOModel": "lavida",
    "GROUPS": "lavida",
    "FrozenVQ": "vq",
    "tiny_model": "presets",
    "REFERENCE_KEYS": "mapping",
    "load_reference_state_dict": "mapping",
    "reference_shapes": "mapping",
    "ModelConfig": "config",
    "tiny_config": "config",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
