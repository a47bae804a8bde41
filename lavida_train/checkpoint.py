"""Base checkpoints: read the release as published (or a file, or a Composer checkpoint) into LaViDa-O.

``load_checkpoint(model, path)`` accepts, for ``path``:

* a folder holding ``model.safetensors.index.json`` -- the release as published
  (``jacklishufan/LaViDa-O-v1.0``: safetensors shards named by the index's ``weight_map``; other
  files of the folder, e.g. ``config.json`` or the ``vqvae/`` subfolder, are not read), or
  ``pytorch_model.bin.index.json`` with torch shards;
* a folder of ``*.safetensors`` shards without an index (every top-level ``*.safetensors``);
* one ``.safetensors`` file;
* one ``.pt`` / ``.pth`` / ``.bin`` file holding a state dict;
* a Composer checkpoint written by ``lavida_train.train`` (``state.model`` is the trainer's state:
  ``model.`` + our names, ``model.vq.model.*`` included).

Names go through :func:`lavida_train.model.mapping.map_key` and the load is strict: every
parameter of the model must be in the checkpoint and every tensor of the checkpoint must be a
parameter, with the same shape (checked from the files' headers before any tensor is read or
copied). The VQ-VAE (the release's ``model.vqvae.*``, 277 tensors) is loaded by default when the
checkpoint has it (``vq="auto"``), required with ``vq="load"``, and dropped by name with
``vq="skip"`` (the model's VQ then comes from ``VQConfig.path``). Safetensors shards are read one
at a time and copied into the model's own tensors (cast to its dtype), so the peak memory is the
model plus one shard.

A Composer checkpoint is a pickle: it is read with ``torch.load(weights_only=True)`` when that
suffices, else (Composer's own objects) with ``weights_only=False`` -- only load checkpoints you
wrote or trust.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Iterator, Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from .model.mapping import OUR_VQ, VQMode, plan_load

log = logging.getLogger(__name__)

Kind = Literal["release", "shards", "safetensors", "torch", "composer"]
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
TORCH_SUFFIXES = (".pt", ".pth", ".bin")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not match the model."""


class CheckpointReport(BaseModel):
    """What :func:`load_checkpoint` read and loaded."""

    model_config = ConfigDict(extra="forbid")

    path: str
    kind: Kind
    files: list[str]
    tensors: int
    loaded: int
    vq: Literal["loaded", "skipped", "absent"]
    vq_tensors: int


@dataclass
class CheckpointSource:
    """A checkpoint's tensors by stored name, read lazily file by file."""

    path: str
    kind: Kind
    files: list[str]
    shapes: dict[str, tuple[int, ...]]
    where: dict[str, str]
    memory: dict[str, torch.Tensor] = field(default_factory=dict)

    def by_file(self, keys: set[str] | None = None) -> Iterator[dict[str, torch.Tensor]]:
        """The tensors (``keys`` only, when given), one file at a time."""
        if self.memory:
            yield {k: v for k, v in self.memory.items() if keys is None or k in keys}
            return
        from safetensors import safe_open

        for f in self.files:
            names = [k for k, w in self.where.items() if w == f and (keys is None or k in keys)]
            if not names:
                continue
            with safe_open(f, framework="pt", device="cpu") as sf:
                yield {k: sf.get_tensor(k) for k in names}

    def tensors(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for part in self.by_file():
            out.update(part)
        return out


def read_checkpoint(path: str | os.PathLike) -> CheckpointSource:
    """Open ``path`` (see the module doc) and read its tensor names and shapes."""
    path = os.fspath(path)
    if os.path.isdir(path):
        for name in INDEX_FILES:
            index = os.path.join(path, name)
            if os.path.isfile(index):
                return _from_index(path, index)
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".safetensors"))
        if not files:
            raise CheckpointError(
                f"{path!r} is a folder without {' or '.join(INDEX_FILES)} and without *.safetensors shards")
        return _from_safetensors(path, "shards", files)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    if path.endswith(".safetensors"):
        return _from_safetensors(path, "safetensors", [path])
    return _from_torch(path)


def load_checkpoint(
    model: nn.Module, path: str | os.PathLike, *, vq: VQMode = "auto", strict: bool = True
) -> CheckpointReport:
    """Load the checkpoint at ``path`` into ``model`` (a ``LavidaO``) strictly; see the module doc.

    Raises :class:`CheckpointError` when the checkpoint cannot be read, ``KeyError`` (missing /
    unexpected names) or ``ValueError`` (shapes) before anything is copied."""
    src = read_checkpoint(path)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    plan = plan_load(own, src.shapes, strict=strict, vq=vq)
    targets = model.state_dict()
    copied = 0
    with torch.no_grad():
        for part in src.by_file(set(plan.keys)):
            for key, value in part.items():
                targets[plan.keys[key]].copy_(value)
                copied += 1
            del part
    n_vq = sum(1 for k in src.shapes if k.startswith(("model.vqvae.", OUR_VQ)))
    state = "loaded" if plan.vq_loaded else ("skipped" if plan.vq_skipped else "absent")
    report = CheckpointReport(path=src.path, kind=src.kind, files=src.files, tensors=len(src.shapes), loaded=copied,
                              vq=state, vq_tensors=n_vq)
    log.info("loaded %d tensors from %s (%s, %d file(s)); VQ-VAE %s", copied, src.path, src.kind, len(src.files),
             state)
    return report


# -- readers ------------------------------------------------------------------------------------------


def _from_index(folder: str, index: str) -> CheckpointSource:
    with open(index, encoding="utf-8") as f:
        weight_map = json.load(f).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index!r} has no weight_map")
    files = sorted({os.path.join(folder, v) for v in weight_map.values()})
    absent = [os.path.basename(f) for f in files if not os.path.isfile(f)]
    if absent:
        raise CheckpointError(f"{index!r} names shard(s) that are not in {folder!r}: {absent}")
    if index.endswith("pytorch_model.bin.index.json"):
        src = _from_torch_files(folder, files)
        src.kind = "release"
    else:
        src = _from_safetensors(folder, "release", files)
    named = {k: os.path.join(folder, v) for k, v in weight_map.items()}
    if named != src.where:
        only_index = sorted(set(named) - set(src.where))
        only_shards = sorted(set(src.where) - set(named))
        moved = sorted(k for k in set(named) & set(src.where) if named[k] != src.where[k])
        raise CheckpointError(
            f"{index!r} and its shards disagree: {len(only_index)} name(s) only in the index {only_index[:5]}, "
            f"{len(only_shards)} only in the shards {only_shards[:5]}, {len(moved)} in another shard {moved[:5]}")
    return src


def _from_safetensors(path: str, kind: Kind, files: list[str]) -> CheckpointSource:
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    where: dict[str, str] = {}
    for f in files:
        try:
            with safe_open(f, framework="pt", device="cpu") as sf:
                for k in sf.keys():
                    if k in where:
                        raise CheckpointError(f"tensor {k!r} is in two shards: {where[k]!r} and {f!r}")
                    shapes[k] = tuple(sf.get_slice(k).get_shape())
                    where[k] = f
        except CheckpointError:
            raise
        except Exception as e:  # a truncated or foreign file
            raise CheckpointError(f"cannot read safetensors file {f!r}: {e}") from e
    return CheckpointSource(path, kind, files, shapes, where)


def _from_torch(path: str) -> CheckpointSource:
    obj = _torch_load(path)
    if isinstance(obj, dict) and isinstance(obj.get("state"), dict) and isinstance(obj["state"].get("model"), dict):
        state = _strip(obj["state"]["model"], "module.")
        state = _strip(state, "model.")  # the Composer model's own attribute
        return _in_memory(path, "composer", [path], state)
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return _in_memory(path, "torch", [path], obj)
    raise CheckpointError(f"{path!r} holds neither a state dict (name -> tensor) nor a Composer checkpoint")


def _from_torch_files(folder: str, files: list[str]) -> CheckpointSource:
    state: dict[str, torch.Tensor] = {}
    where: dict[str, str] = {}
    for f in files:
        part = _torch_load(f)
        if not isinstance(part, dict) or not all(isinstance(v, torch.Tensor) for v in part.values()):
            raise CheckpointError(f"shard {f!r} is not a state dict")
        for k in part:
            if k in where:
                raise CheckpointError(f"tensor {k!r} is in two shards: {where[k]!r} and {f!r}")
            where[k] = f
        state.update(part)
    src = _in_memory(folder, "release", files, state)
    src.where = where
    return src


def _in_memory(path: str, kind: Kind, files: list[str], state: dict[str, torch.Tensor]) -> CheckpointSource:
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    return CheckpointSource(path, kind, files, shapes, {k: files[0] for k in state}, dict(state))


def _torch_load(path: str):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as safe_error:  # Composer checkpoints pickle their own objects
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:
            raise CheckpointError(f"cannot read {path!r}: {e}") from e
        log.warning("%s needed a full unpickle (%s); only load checkpoints you trust", path,
                    type(safe_error).__name__)
        return obj


def _strip(state: dict, prefix: str) -> dict:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


__all__ = ["CheckpointError", "CheckpointReport", "CheckpointSource", "load_checkpoint", "read_checkpoint"]


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint (a release folder with its index, a folder of shards, a
    ``.safetensors`` / ``.pt`` / ``.bin`` file or a Composer checkpoint), in memory, by its stored
    name (see :func:`lavida_train.checkpoint.read_checkpoint`)."""
    return read_checkpoint(path).tensors()
