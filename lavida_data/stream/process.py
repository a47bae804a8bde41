"""The per-sample path inside a loader worker, as small named stages, each overridable:

``cook`` (shard record -> row), ``convert`` (the converter, seeded per sample), ``load_images``
(embedded bytes, else fetched through :mod:`lavida_data.io` with its retry policy), ``transform``
(generation target, edit sources, SigLIP anyres, micro-conditions), ``tokenize`` (LLaDA format,
labels). A stage raising
:class:`SampleError` makes the sample bad: it is skipped and counted under its reason.
"""

from __future__ import annotations

import io
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field

from lavida_data.convert.sample import IMAGE_ROLES, convert_row, image_paths
from lavida_data.errors import SampleError
from lavida_data.io.images import read_image_bytes
from lavida_data.prepared.layout import RowCodec, unpack_images
from lavida_data.rng import sample_np_rng
from lavida_data.spec.plan import DatasetPlan
from lavida_data.transforms.images import ImageConfig, ImageTransform


class ProcessConfig(BaseModel):
    """How samples are turned into model inputs."""

    model_config = ConfigDict(extra="forbid")

    image: ImageConfig = Field(default_factory=ImageConfig)
    tokenize: Any = Field(None, description="a TokenizeConfig; None leaves samples untokenized")
    decode_images: bool = Field(True, description="load and transform images (off: conversion only)")
    image_retries: int = Field(3, ge=0, description="ignored: fetches follow the storage layer's retry policy "
                                                      "(LAVIDA_S3_* settings)")


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
            from lavida_data.transforms.tokenize import Tokenize, TokenizeConfig

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
        """Every image the sample names, decoded in full (as upstream: a reduced JPEG decode would
        change the pixels by far more than one level of 255)."""
        from PIL import Image

        out = {}
        for role in IMAGE_ROLES:
            for path in image_paths(sample, role):
                if path in out:
                    continue
                data = embedded.get(path)
                if data is None:
                    data = self._fetch(path)
                try:
                    img = Image.open(io.BytesIO(data))
                    img.load()
                except Exception as e:
                    raise SampleError("image_unreadable", f"{path}: {type(e).__name__}: {e}", field=role,
                                      path=path) from e
                out[path] = img
        return out

    def _fetch(self, path: str) -> bytes:
        """Permanent faults make the sample bad; transient ones are retried by the storage layer,
        and one that lasts (``StorageUnavailable``) stops the run: it is never counted as bad data."""
        try:
            return read_image_bytes(path)
        except (FileNotFoundError, PermissionError) as e:
            raise SampleError("image_missing", f"{path}: {e}", path=path) from e
        except ValueError as e:
            raise SampleError("image_unsupported", str(e), path=path) from e
        except OSError as e:  # a permanent refusal of the store, a local read error
            raise SampleError("image_fetch_failed", f"{path}: {e}", path=path) from e

    def transform(self, sample: dict, images: Mapping[str, Any], rng) -> dict:
        return self._images(sample, images, rng)

    def tokenize(self, sample: dict, rng) -> dict:
        if self._tokenize is None:
            return sample
        return check_images({**sample, **self._tokenize(sample, rng)}, self.config.image.und_size)

    # -- the whole path ---------------------------------------------------------------------
    def __call__(self, dataset: str, raw: Mapping[str, Any], epoch: int, position: int) -> dict:
        plan = self.plans[dataset]
        row_index, row, embedded = self.cook(dataset, raw)
        sample = self.convert(plan, row, row_index, epoch, position)
        rng = sample_np_rng(self.seed, epoch, position)
        if self.config.decode_images:
            sample = self.transform(sample, self.load_images(sample, embedded), rng)
        if self.config.decode_images:
            sample = self.tokenize(sample, rng)
        elif self._tokenize is not None:
            sample = {**sample, **self._tokenize(sample, rng)}
        sample["dataset"] = dataset
        sample["position"] = position
        sample["epoch"] = epoch
        return sample


def check_images(sample: dict, und_size: int = 384) -> dict:
    """The rendered sample's image places against its pixels.

    * ``-200`` places vs understanding images: a sample with an ``"image"`` key but no picture
      (UniWorld's text-to-image rows: ``"image": None``) gets one ``<image>`` place from the
      rendering, and upstream's collator then supplies a zero "text" image of one SigLIP crop:
      so do we (``und_pixels`` = one ``[1, 3, S, S]`` zero crop, ``und_sizes`` (S, S)).
    * any other mismatch (more pictures than ``<image>`` places, or fewer), and generation or
      edit-source slots without their pixels: upstream's model takes the batch's images in order,
      so one sample's mismatch shifts its neighbours' images; ours skips the sample
      (``image_marker_mismatch``).
    """
    import torch

    und = list(sample.get("und_pixels") or [])
    n_img = int(sample.get("n_images", 0))
    if n_img != len(und):
        if n_img == 1 and not und and "image" in sample:
            sample["und_pixels"] = [torch.zeros(1, 3, und_size, und_size)]
            sample["und_sizes"] = [(und_size, und_size)]
            sample["und_dummy"] = True
        else:
            raise SampleError("image_marker_mismatch",
                              f"{n_img} <image> place(s) for {len(und)} understanding image(s)")
    for count, key, what in (("n_gen", "gen_pixels", "<image_gen>"), ("n_gen_enc", "gen_enc_pixels", "<image_gen_enc>")):
        have = len(sample.get(key) or [])
        if int(sample.get(count, 0)) != have:
            raise SampleError("image_marker_mismatch", f"{sample.get(count, 0)} {what} place(s) for {have} image(s)")
    return sample
