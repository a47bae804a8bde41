"""Worker of test_unused_parameters.py, run on 2 CPU processes by torchrun (gloo).

Per stage: the Recipe's model and loader (2 ranks: each rank its share of each step), the first
``--steps`` steps plus two made ones (rank 1's share all skipped as bad; both ranks' shares all
skipped). For each step, the reference gradient is computed from the plain model on each rank
and reduced by hand (each rank's loss scaled by its samples over the mean per rank, as Composer
does; then the mean over ranks, as DDP and FSDP do). Then the same steps under DDP
(``find_unused_parameters=False``) and under FSDP as Composer wraps it (``FULL_SHARD``,
``use_orig_params``, each LLaDA block a unit with non-reentrant activation checkpointing, the
VQ-VAE ignored) must run and give the reference gradient for every trainable parameter. Each
rank writes ``rank{r}.json``: per step, its group, kept / skipped counts, the largest gradient
differences, and the trainable parameters that would get no gradient without the zero anchor.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

import torch
import torch.distributed as tdist


def trainable_grads(model: torch.nn.Module) -> dict[str, torch.Tensor | None]:
    clean = re.compile(r"(_fsdp_wrapped_module\.|_checkpoint_wrapped_module\.)")
    return {clean.sub("", n): (None if p.grad is None else p.grad.detach().clone())
            for n, p in model.named_parameters() if p.requires_grad}


def empty_like(batch: dict) -> dict:
    n = len(batch["ids"]) + len(batch["skipped"])
    return {"ids": [], "skipped": [{"id": f"bad:{i}", "reason": "made"} for i in range(n)],
            "input_ids": torch.empty((0, 0), dtype=torch.long), "step": batch["step"], "group": batch["group"]}


def backward(cm, module, batch: dict, scale: float) -> None:
    module.zero_grad(set_to_none=True)
    outputs = module(batch)
    (cm.loss(outputs, batch) * scale).backward()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--stage", required=True)
    p.add_argument("--prepared", required=True)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--steps", type=int, default=2)
    args = p.parse_args()

    from composer.utils import dist
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
        CheckpointImpl,
        apply_activation_checkpointing,
        checkpoint_wrapper,
    )
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp import ShardingStrategy
    from torch.distributed.fsdp.wrap import CustomPolicy
    from torch.nn.parallel import DistributedDataParallel as DDP

    from lavida_train.config import load_stage
    from lavida_train.model.lavida import LavidaO
    from lavida_train.passes import num_samples
    from lavida_train.train import Recipe

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cfg = load_stage(os.path.join(root, "examples", "stages", f"{args.stage}.yaml"),
                     ["model.preset=tiny", f"data.prepared={args.prepared}", f"save_folder={args.out}/{args.stage}",
                      "data.num_workers=0", "init_from=null", f"seed={args.seed}"])
    recipe = Recipe(cfg)
    recipe.setup()  # the process group (gloo), the tokenizer behind its barrier, this rank's loader
    rank, world = dist.get_global_rank(), dist.get_world_size()
    cm = recipe.composer_model
    it = iter(recipe.train_data.dataloader)
    batches = [next(it) for _ in range(args.steps)]
    batches.append(empty_like(batches[0]) if rank == 1 else batches[0])  # rank 1's share all bad
    batches.append(empty_like(batches[-2]))  # every share bad

    def scale_of(batch: dict) -> float:
        total = torch.tensor(float(num_samples(batch)))
        tdist.all_reduce(total)
        return num_samples(batch) / (float(total) / world)

    # the reference: the plain model on this rank's share, reduced by hand
    reference, unused = [], []
    for batch in batches:
        scale = scale_of(batch)
        original = LavidaO.zero_anchor
        LavidaO.zero_anchor = lambda self: torch.zeros(())  # noqa: E731  what DDP / FSDP would not see
        backward(cm, cm, batch, scale)
        LavidaO.zero_anchor = original
        unused.append(sorted(n for n, g in trainable_grads(cm.model).items() if g is None))
        backward(cm, cm, batch, scale)
        grads = trainable_grads(cm.model)
        assert all(g is not None for g in grads.values()), "the anchor left a parameter without a gradient"
        for g in grads.values():
            tdist.all_reduce(g)
            g /= world
        reference.append(grads)

    report = {"rank": rank, "steps": []}
    for i, batch in enumerate(batches):
        report["steps"].append({"group": batch["group"], "kept": len(batch["ids"]), "skipped": len(batch["skipped"]),
                                "unused_without_anchor": unused[i]})

    def compare(kind: str, module: torch.nn.Module, grads_of) -> None:
        for i, batch in enumerate(batches):
            backward(cm, module, batch, scale_of(batch))
            grads = grads_of()
            missing = sorted(n for n, g in grads.items() if g is None)
            assert not missing, (kind, i, missing[:5])
            assert grads.keys() == reference[i].keys(), (kind, sorted(set(grads) ^ set(reference[i]))[:5])
            worst = 0.0
            for n, g in grads.items():
                ref = reference[i][n]
                torch.testing.assert_close(g, ref, rtol=1e-5, atol=1e-7, msg=f"{kind} step {i} {n}")
                worst = max(worst, float((g - ref).abs().max()) if g.numel() else 0.0)
            report["steps"][i][f"{kind}_max_abs_diff"] = worst

    ddp = DDP(cm, find_unused_parameters=False)
    compare("ddp", ddp, lambda: trainable_grads(cm.model))
    del ddp

    lavida = cm.model
    vq = lavida.vq
    fsdp = FSDP(lavida, auto_wrap_policy=CustomPolicy(LavidaO.fsdp_wrap_fn), ignored_modules=[vq],
                use_orig_params=True, sharding_strategy=ShardingStrategy.FULL_SHARD, device_id=torch.device("cpu"))
    apply_activation_checkpointing(  # as Composer does with activation_checkpointing (non-reentrant)
        fsdp, check_fn=lambda m: not isinstance(m, FSDP) and LavidaO.activation_checkpointing_fn(m),
        checkpoint_wrapper_fn=lambda m: checkpoint_wrapper(m, checkpoint_impl=CheckpointImpl.NO_REENTRANT))
    report["fsdp_units"] = sum(1 for m in fsdp.modules() if isinstance(m, FSDP))
    cm.model = fsdp

    def fsdp_grads():
        with FSDP.summon_full_params(fsdp, with_grads=True, writeback=False):
            return trainable_grads(fsdp)

    compare("fsdp", cm, fsdp_grads)
    with open(os.path.join(args.out, f"{args.stage}-rank{rank}.json"), "w") as f:
        json.dump(report, f, indent=1)
    tdist.barrier()


if __name__ == "__main__":
    sys.exit(main())
