"""``build_dataset`` and ``build_dataloader``: a prepared mixture as one batch per training step."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any, Iterator, Mapping

import torch.utils.data

from lavida_data.errors import LavidaDataError
from lavida_data.spec.validate import Report, load_mixture
from lavida_data.stream.dataset import LoaderConfig, MixtureDataset, collate_samples
from lavida_data.stream.process import ProcessConfig, SampleProcessor

__all__ = ["MixtureLoader", "build_dataloader", "build_dataset", "collate_samples", "die_with_parent"]


def build_dataset(config: str | os.PathLike | Report, prepared: str, *, batch_size: int, seed: int | None = None,
                  process: ProcessConfig | Mapping | None = None, loader: LoaderConfig | Mapping | None = None,
                  world_size: int | None = None, rank: int | None = None) -> MixtureDataset:
    """The training steps of a prepared mixture.

    ``config`` is a mixture file (validated, tables' schemas included) or a validation report;
    ``prepared`` the folder or ``s3://`` prefix given to ``lavida-data prepare``; ``batch_size``
    the per-device batch size B (a step of length group g has ``max(int(B * factor_g), 1)``
    samples per device); ``world_size``/``rank`` default to the launcher's WORLD_SIZE and RANK.
    """
    report = config if isinstance(config, Report) else load_mixture(config)
    proc = process if isinstance(process, ProcessConfig) else ProcessConfig.model_validate(process or {})
    cfg = loader if isinstance(loader, LoaderConfig) else LoaderConfig.model_validate(loader or {})
    seed = report.mixture.seed if seed is None else seed
    return MixtureDataset(report.mixture, report.plans, prepared, batch_size=batch_size, seed=seed,
                          processor=SampleProcessor(report.plans, seed, proc), config=cfg, world_size=world_size,
                          rank=rank, schemas=report.schemas)


def _as_is(batch: Any) -> Any:  # the dataset yields collated batches
    return batch


class MixtureLoader(torch.utils.data.DataLoader):
    """A DataLoader of one batch per step that tracks its place (``state_dict`` /
    ``load_state_dict``) and aggregates bad-sample counts per dataset and reason (``bad``)."""

    dataset: MixtureDataset

    def __init__(self, dataset: MixtureDataset, **kwargs: Any):
        super().__init__(dataset, batch_size=None, collate_fn=_as_is, **kwargs)
        self.bad: dict[str, Counter] = {}
        self._epoch = 0
        self._step = 0  # the next step this loader yields

    def __iter__(self) -> Iterator[Any]:
        ds = self.dataset
        epoch, start = ds.begin_epoch()
        ds._handoff = (epoch, start)  # read by iter(dataset), in this process or in each worker
        try:
            it = super().__iter__()
        finally:
            ds._handoff = None
        return self._run(it, epoch, start)

    def _run(self, it: Iterator[Any], epoch: int, start: int) -> Iterator[Any]:
        ds = self.dataset
        ds._active = True
        self._epoch, self._step = epoch, start
        last = len(ds) - 1
        for batch in it:
            for s in batch["skipped"]:
                self.bad.setdefault(s["dataset"], Counter())[s["reason"]] += 1
            self._step += 1
            if batch["step"] == last:  # every step handed out (Composer stops here: it takes len(loader))
                ds._done = True
            yield batch
        ds.end_epoch()

    def state_dict(self) -> dict[str, Any]:
        """Resumes after the last batch this loader yielded."""
        ds = self.dataset
        if ds._epoch is None:
            return ds.state_at(*ds._next)
        return ds.state_at(self._epoch, self._step)

    def load_state_dict(self, obj: Mapping[str, Any]) -> None:
        self.dataset.load_state_dict(obj)

    def bad_counts(self) -> dict[str, dict[str, int]]:
        return {d: dict(c) for d, c in sorted(self.bad.items())}


def die_with_parent(_worker_id: int = 0) -> None:
    """Worker init: on Linux, a worker dies with its parent. Otherwise a SIGKILLed run leaves its
    workers (kept alive by download threads) and their shared memory behind."""
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
    """A loader of one batch per step; each carries ``ids`` (kept samples), ``skipped`` (bad ones,
    with reasons), ``step`` and ``group``. ``batch_size``, if given, must be the dataset's."""
    if batch_size is not None and batch_size != dataset.batch_size:
        raise LavidaDataError(f"batch_size {batch_size} differs from the dataset's {dataset.batch_size}")
    if persistent_workers:
        raise LavidaDataError("persistent_workers is not supported: each epoch's starting step is handed to "
                              "the workers when they start")
    # the loader's own generator: starting an iterator must not draw from torch's global one
    # (a resumed run would then draw different training randomness than an uninterrupted one)
    generator = torch.Generator().manual_seed(dataset.seed)
    return MixtureLoader(
        dataset, generator=generator, num_workers=num_workers, pin_memory=pin_memory,
        worker_init_fn=die_with_parent, prefetch_factor=prefetch_factor if num_workers else None,
    )
