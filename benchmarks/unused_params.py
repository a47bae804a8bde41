"""What the unused-parameter choice costs: the zero anchor against DDP's ``find_unused_parameters``.

    .venv/bin/python benchmarks/unused_params.py [--model tiny|small] [--steps 6] [--json OUT.json]

Launches itself on 2 CPU processes (torchrun, gloo), builds stage s3-unified's model (``tiny``:
the tiny preset; ``small``: wider and deeper, the same data shapes) and its first steps of the
example s3 mixture on 2 ranks (a seed whose steps hold generation, editing, understanding and
plan-only samples), and times forward + loss + backward of the same steps, data loading
excluded, each mode after two warm-up passes over the steps:

* ``ddp_anchor``: DDP, ``find_unused_parameters=False``, the model's zero anchor (the choice);
* ``ddp_find_unused``: DDP, ``find_unused_parameters=True``, no anchor (the alternative);
* ``fsdp_anchor``: FSDP as Composer wraps it (``FULL_SHARD``, each LLaDA block a unit), anchor;
* ``one_anchor`` / ``one_plain``: each rank alone, no wrapper, with and without the anchor (the
  anchor's own cost, without communication).

Reports the median step time per mode (ms, the slower rank); the anchor's own forward and
backward alone (``anchor_only_ms``: into fresh gradients, and added into existing ones); and the
anchor's size (parameter tensors and elements it covers) for these models and, counted on the
meta device, for the released model's sizes in each stage's trainable set.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def small_config(tiny):
    """Wider and deeper than the tiny preset, with its SigLIP input and VQ (the same data)."""
    return tiny.model_copy(update=dict(
        d_model=256, n_layers=6, n_heads=8, mlp_hidden=768, dual_tower_layers=2, gen_width=128, gen_mlp_hidden=512,
        siglip=tiny.siglip.model_copy(update=dict(hidden_size=128, intermediate_size=512, num_hidden_layers=6,
                                                  num_attention_heads=4))))


def seed_with_every_kind(prepared: str, steps: int) -> int:
    from lavida_data import validate_file
    from lavida_data.stream.order import global_batches

    kinds = {"edit": "e", "edit_gpt": "e", "edit_gpt_reason": "e", "und": "u", "und_vw": "u", "grounding": "u",
             "edit_gpt_reason_txt": "p", "reflect_dit_plan_text": "p", "reflect_dit_plan_feedback_text": "p"}
    report = validate_file(ROOT / "examples" / "stages" / "mixtures" / "s3-unified.yaml")
    for seed in range(3000):
        groups = [b["group"] for b in global_batches(report.mixture, report.plans, prepared, batch_size=2,
                                                     world_size=2, seed=seed, steps=steps)]
        if {kinds.get(g, "g") for g in groups} == {"g", "e", "u", "p"}:
            return seed
    return 42


def worker(args) -> None:
    import torch
    import torch.distributed as tdist
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (CheckpointImpl,
                                                                             apply_activation_checkpointing,
                                                                             checkpoint_wrapper)
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp import ShardingStrategy
    from torch.distributed.fsdp.wrap import CustomPolicy
    from torch.nn.parallel import DistributedDataParallel as DDP

    from lavida_train.config import load_stage
    from lavida_train.model.lavida import LavidaO
    from lavida_train.train import Recipe, num_samples

    cfg = load_stage(ROOT / "examples" / "stages" / "s3-unified.yaml",
                     ["model.preset=tiny", f"data.prepared={args.prepared}", f"save_folder={args.out}/run",
                      "data.num_workers=0", "init_from=null", f"seed={args.seed}"])
    recipe = Recipe(cfg)
    recipe.setup()
    if args.model == "small":
        recipe.model = LavidaO.from_config(small_config(recipe.model_cfg), vocab_size=recipe.vocab_size, seed=args.seed,
                                           anyres_grid=recipe._anyres_grid())
        recipe.trainable = recipe._freeze()
        recipe.composer_model = recipe._composer_model()
    cm = recipe.composer_model
    rank, world = tdist.get_rank(), tdist.get_world_size()
    it = iter(recipe.train_data.dataloader)
    batches = [next(it) for _ in range(args.steps)]
    anchor = cm.model.anchor_parameters()
    trainable = [p for p in cm.model.parameters() if p.requires_grad]
    info = {"model": args.model, "steps": args.steps, "groups": [b["group"] for b in batches],
            "trainable_tensors": len(trainable), "trainable_elements": sum(p.numel() for p in trainable),
            "anchor_tensors": len(anchor), "anchor_elements": sum(p.numel() for p in anchor)}
    original = LavidaO.zero_anchor

    def run(module, sync: bool) -> list[float]:
        times = []
        for rnd in range(3):  # a warm-up round, then two timed ones
            for batch in batches:
                n = torch.tensor(float(num_samples(batch)))
                if sync:
                    tdist.all_reduce(n)
                scale = num_samples(batch) / (float(n) / (world if sync else 1))
                if sync:
                    tdist.barrier()
                t0 = time.perf_counter()
                module.zero_grad(set_to_none=True)
                (cm.loss(module(batch), batch) * scale).backward()
                dt = time.perf_counter() - t0
                if rnd:
                    times.append(dt)
        return times

    def slowest(times: list[float]) -> float:
        t = torch.tensor(times)
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
        return round(1000 * statistics.median(t.tolist()), 2)

    def anchor_only(fresh: bool, reps: int = 20) -> float:
        times = []
        for _ in range(reps):
            if fresh:
                cm.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            cm.model.zero_anchor().backward()
            times.append(time.perf_counter() - t0)
        return round(1000 * statistics.median(times), 3)

    results = {}
    info["anchor_only_ms"] = {"fresh": anchor_only(True), "accumulate": anchor_only(False)}
    LavidaO.zero_anchor = lambda self: torch.zeros(())  # noqa: E731
    results["one_plain"] = slowest(run(cm, sync=False))
    LavidaO.zero_anchor = original
    results["one_anchor"] = slowest(run(cm, sync=False))
    ddp = DDP(cm, find_unused_parameters=False)
    results["ddp_anchor"] = slowest(run(ddp, sync=True))
    del ddp
    LavidaO.zero_anchor = lambda self: torch.zeros(())  # noqa: E731
    ddp = DDP(cm, find_unused_parameters=True)
    results["ddp_find_unused"] = slowest(run(ddp, sync=True))
    del ddp
    LavidaO.zero_anchor = original
    fsdp = FSDP(cm.model, auto_wrap_policy=CustomPolicy(LavidaO.fsdp_wrap_fn), ignored_modules=[cm.model.vq],
                use_orig_params=True, sharding_strategy=ShardingStrategy.FULL_SHARD, device_id=torch.device("cpu"))
    apply_activation_checkpointing(
        fsdp, check_fn=lambda m: not isinstance(m, FSDP) and LavidaO.activation_checkpointing_fn(m),
        checkpoint_wrapper_fn=lambda m: checkpoint_wrapper(m, checkpoint_impl=CheckpointImpl.NO_REENTRANT))
    cm.model = fsdp
    results["fsdp_anchor"] = slowest(run(cm, sync=True))
    if rank == 0:
        out = {**info, "median_step_ms": results,
               "anchor_vs_find_unused": round(results["ddp_anchor"] / results["ddp_find_unused"], 3),
               "anchor_alone_vs_plain": round(results["one_anchor"] / results["one_plain"], 3)}
        with open(os.path.join(args.out, f"result-{args.model}.json"), "w") as f:
            json.dump(out, f, indent=1)
    tdist.barrier()


def released_sizes() -> dict:
    """The anchor's tensors and elements for the released model's sizes (built on the meta
    device: no memory), per stage's trainable set."""
    import torch

    from lavida_train.model.config import ModelConfig
    from lavida_train.model.lavida import LavidaO

    with torch.device("meta"):
        model = LavidaO(ModelConfig())
    groups = model.param_groups()
    out = {}
    for stage, names in {"s1-gnd, s3-unified": ["vision_tower", "projector", "resampler", "language_model"],
                         "s2-256, s2-1024": ["generation_branch"]}.items():
        model.set_trainable(names)
        anchor = model.anchor_parameters()
        trainable = [p for p in model.parameters() if p.requires_grad]
        out[stage] = {"trainable_tensors": len(trainable), "trainable_elements": sum(p.numel() for p in trainable),
                      "anchor_tensors": len(anchor), "anchor_elements": sum(p.numel() for p in anchor)}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["tiny", "small"], nargs="+", default=["tiny", "small"])
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--json", help="write the results here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--prepared", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=42, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.model = args.model[0]
        worker(args)
        return 0
    from lavida_data import validate_file
    from lavida_data.prepare.local import prepare

    import platform

    import torch

    results = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "python": platform.python_version(),
               "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "processes": 2, "backend": "gloo",
               "command": " ".join(["benchmarks/unused_params.py", *sys.argv[1:]]),
               "released_model_anchor": released_sizes(), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        report = validate_file(ROOT / "examples" / "stages" / "mixtures" / "s3-unified.yaml")
        prepare(report.plans.values(), os.path.join(tmp, "prepared"))
        seed = seed_with_every_kind(os.path.join(tmp, "prepared"), args.steps)
        for model in args.model:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__,
                   "--worker", "--model", model, "--steps", str(args.steps), "--prepared",
                   os.path.join(tmp, "prepared"), "--out", tmp, "--seed", str(seed)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            if proc.returncode:
                print((proc.stdout + proc.stderr)[-4000:], file=sys.stderr)
                return proc.returncode
            with open(os.path.join(tmp, f"result-{model}.json")) as f:
                results["runs"].append(json.load(f))
    text = json.dumps(results, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
