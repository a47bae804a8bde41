"""``build_dataset`` and ``build_dataloader``: a prepared mixture as batches."""

from __future__ import annotations

import os
from collections import Counter
from functools import partial
from typing import Any, Iterator, Mapping, Sequence

from ..errors import LavidaDataError
from ..validate import Report, load_mixture
from .dataset import LoaderConfig, MixtureDataset
from .process import ProcessConfig, SampleProcessor

try:
    from streaming import StreamingDataLoader
except ImportError:  # pragma: no cover
    from ..errors import MissingDependencyError

    raise MissingDependencyError("mosaicml-streaming is needed to stream: pip install lavida-data")


def build_dataset(config: str | os.PathLike | Report, prepared: str, *, batch_size: int, seed: int | None = None,
                  process: ProcessConfig | Mapping | None = None, loader: LoaderConfig | Mapping | None = None,
                  ) -> MixtureDataset:
    """One StreamingDataset over the prepared datasets of a mixture.

    ``config`` is a mixture file (validated, tables' schemas included) or a validation report;
    ``prepared`` the folder or ``s3://`` prefix given to ``lavida-data prepare``; ``batch_size``
    the per-device batch size (the DataLoader's).
    """
    report = config if isinstance(config, Report) else load_mixture(config)
    proc = process if isinstance(process, ProcessConfig) else ProcessConfig.model_validate(process or {})
    cfg = loader if isinstance(loader, LoaderConfig) else LoaderConfig.model_validate(loader or {})
    seed = report.mixture.seed if seed is None else seed
    return MixtureDataset(report.mixture, report.plans, prepared, batch_size=batch_size, seed=seed,
                          processor=SampleProcessor(report.plans, seed, proc), config=cfg)


def collate_samples(items: Sequence[Mapping[str, Any]], pad_id: int | None) -> dict:
    """Tokenized samples are padded into tensors; untokenized ones are kept as a list."""
    if pad_id is not None:
        from ..transforms.collate import collate

        return collate(items, pad_id)
    skipped = [{"id": i.get("id"), "dataset": i.get("dataset"), "reason": i.get("reason")} for i in items if i.get("bad")]
    kept = [dict(i) for i in items if not i.get("bad")]
    return {"ids": [i["id"] for i in kept], "skipped": skipped, "samples": kept}


class MixtureLoader(StreamingDataLoader):
    """A StreamingDataLoader that counts skipped samples as consumed (so resumption stays exact)
    and aggregates bad-sample counts per dataset and reason (``loader.bad``)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.bad: dict[str, Counter] = {}
        self._active = False  # an epoch's iteration began and has not finished

    def _get_batch_size(self, batch: Any) -> int:
        return len(batch["ids"]) + len(batch["skipped"])

    def __iter__(self) -> Iterator[Any]:
        self._active = True
        for batch in super().__iter__():
            for s in batch["skipped"]:
                self.bad.setdefault(s["dataset"], Counter())[s["reason"]] += 1
            yield batch
        self._active = False

    def load_state_dict(self, obj: dict[str, Any]) -> None:
        if self._active:
            raise LavidaDataError(
                "load_state_dict() after iteration began: the workers already hold their work for this epoch. "
                "Load the state before the first batch (or build a new loader)."
            )
        super().load_state_dict(obj)

    def bad_counts(self) -> dict[str, dict[str, int]]:
        return {d: dict(c) for d, c in sorted(self.bad.items())}


def die_with_parent(_worker_id: int = 0) -> None:
    """Worker init: on Linux, a worker dies with its parent. Otherwise a SIGKILLed run leaves its
    workers (kept alive by streaming's download threads) and their shared memory behind."""
    import signal
    import sys

    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def build_dataloader(dataset: MixtureDataset, *, batch_size: int | None = None, num_workers: int = 2,
                     pin_memory: bool = False, prefetch_factor: int | None = None,
                     persistent_workers: bool = False) -> MixtureLoader:
    """A loader whose batches carry ``ids`` (kept samples) and ``skipped`` (bad ones, with reasons)."""
    batch_size = batch_size or dataset.batch_size
    if batch_size != dataset.batch_size:
        raise LavidaDataError(f"batch_size {batch_size} differs from the dataset's {dataset.batch_size}")
    pad_id = None
    tok = dataset.processor._tokenize
    if tok is not None:
        pad_id = tok.token_ids.pad
    import torch

    # the loader's own generator: starting an iterator must not draw from torch's global one
    # (a resumed run would then draw different training randomness than an uninterrupted one)
    generator = torch.Generator().manual_seed(dataset.seed)
    return MixtureLoader(
        dataset, batch_size=batch_size, generator=generator, num_workers=num_workers, pin_memory=pin_memory,
        collate_fn=partial(collate_samples, pad_id=pad_id), worker_init_fn=die_with_parent,
        prefetch_factor=prefetch_factor if num_workers else None,
        persistent_workers=persistent_workers and num_workers > 0,
    )
