"""The per-sample path inside a loader worker, as small named stages, each overridable:

``cook`` (shard record -> row), ``convert`` (the converter, seeded per sample), ``load_images``
(embedded bytes, else fetched with retries), ``transform`` (generation target, edit sources,
SigLIP anyres, micro-conditions), ``tokenize`` (LLaDA format, labels). A stage raising
:class:`SampleError` makes the sample bad: it is skipped and counted under its reason.
"""

from __future__ import annotations

import io
import time
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field

from ..errors import SampleError
from ..images import read_image_bytes
from ..plan import DatasetPlan
from ..rng import sample_np_rng
from ..sample import IMAGE_ROLES, convert_row, image_paths
from ..shards import RowCodec, unpack_images
from ..transforms.images import ORIGINAL_SIZE, ImageConfig, ImageTransform


class ProcessConfig(BaseModel):
    """How samples are turned into model inputs."""

    model_config = ConfigDict(extra="forbid")

    image: ImageConfig = Field(default_factory=ImageConfig)
    tokenize: Any = Field(None, description="a TokenizeConfig; None leaves samples untokenized")
    decode_images: bool = Field(True, description="load and transform images (off: conversion only)")
    image_retries: int = Field(3, ge=0)


class SampleProcessor:
    """Picklable: built in the main process, called in each DataLoader worker."""

    def __init__(self, plans: Mapping[str, DatasetPlan], seed: int, config: ProcessConfig | None = None):
        self.plans = dict(plans)
        self.codecs: dict[str, RowCodec] = {}  # set from the manifests by the dataset
        self.seed = seed
        self.config = config or ProcessConfig()
        self._images = ImageTransform(self.config.image)
        self._tokenize = None
        if self.config.tokenize is not None:
            from ..transforms.tokenize import Tokenize, TokenizeConfig

            cfg = self.config.tokenize
            self._tokenize = Tokenize(cfg if isinstance(cfg, TokenizeConfig) else TokenizeConfig.model_validate(cfg))

    # -- stages -----------------------------------------------------------------------------
    def cook(self, dataset: str, raw: Mapping[str, Any]) -> tuple[int, dict, dict[str, bytes]]:
        try:
            row = self.codecs[dataset].decode(raw)
        except (ValueError, KeyError) as e:
            raise SampleError("bad_record", f"undecodable row: {e}") from e
        return int(raw["row_index"]), row, unpack_images(raw.get("images") or b"")

    def convert(self, plan: DatasetPlan, row: dict, row_index: int, epoch: int, position: int) -> dict:
        return convert_row(plan.converter, plan.options, row, dataset=plan.name, row_index=row_index,
                           seed=self.seed, epoch=epoch, position=position, image_root=plan.image_root)

    def load_images(self, sample: Mapping[str, Any], embedded: Mapping[str, bytes]) -> dict:
        from PIL import Image

        out = {}
        draft = self._draft_sizes(sample)
        for role in IMAGE_ROLES:
            for path in image_paths(sample, role):
                if path in out:
                    continue
                data = embedded.get(path)
                if data is None:
                    data = self._fetch(path)
                try:
                    img = Image.open(io.BytesIO(data))
                    if path in draft and img.format == "JPEG":
                        size = img.size
                        img.draft("RGB", draft[path](*size))  # decode at a reduced scale
                        img.info[ORIGINAL_SIZE] = size  # micro-conditions report the file's size
                    img.load()
                except Exception as e:
                    raise SampleError("image_unreadable", f"{path}: {type(e).__name__}: {e}", field=role) from e
                out[path] = img
        return out

    def _draft_sizes(self, sample: Mapping[str, Any]) -> dict:
        """For images used only as a generation target or edit source: the smallest size whose
        decode still covers the generation size (JPEG draft mode decodes at 1/2, 1/4, 1/8)."""
        import math

        size = self.config.image.gen_size
        und = set(image_paths(sample, "image"))

        def shorter(w: int, h: int) -> tuple[int, int]:  # cropped: the shorter side reaches size
            s = size / min(w, h)
            return math.ceil(w * s), math.ceil(h * s)

        def longer(w: int, h: int) -> tuple[int, int]:  # padded: the longer side reaches size
            s = size / max(w, h)
            return math.ceil(w * s), math.ceil(h * s)

        out = {}
        mode = sample.get("gen_transform", "crop")
        for p in image_paths(sample, "image_gen"):
            if p not in und and mode in ("crop", "pad"):
                out[p] = shorter if mode == "crop" else longer
        for p in image_paths(sample, "image_gen_enc"):
            if p not in und:
                out[p] = longer
        return out

    def _fetch(self, path: str) -> bytes:
        for attempt in range(self.config.image_retries + 1):
            try:
                return read_image_bytes(path)
            except (FileNotFoundError, PermissionError) as e:
                raise SampleError("image_missing", f"{path}: {e}") from e
            except ValueError as e:
                raise SampleError("image_unsupported", str(e)) from e
            except OSError as e:
                if attempt == self.config.image_retries:
                    raise SampleError("image_fetch_failed", f"{path}: {e}") from e
                time.sleep(0.1 * 2**attempt)
        raise AssertionError("unreachable")

    def transform(self, sample: dict, images: Mapping[str, Any], rng) -> dict:
        return self._images(sample, images, rng)

    def tokenize(self, sample: dict, rng) -> dict:
        if self._tokenize is None:
            return sample
        return {**sample, **self._tokenize(sample, rng)}

    # -- the whole path ---------------------------------------------------------------------
    def __call__(self, dataset: str, raw: Mapping[str, Any], epoch: int, position: int) -> dict:
        plan = self.plans[dataset]
        row_index, row, embedded = self.cook(dataset, raw)
        sample = self.convert(plan, row, row_index, epoch, position)
        rng = sample_np_rng(self.seed, epoch, position)
        if self.config.decode_images:
            sample = self.transform(sample, self.load_images(sample, embedded), rng)
        sample = self.tokenize(sample, rng)
        sample["dataset"] = dataset
        sample["position"] = position
        sample["epoch"] = epoch
        return sample
