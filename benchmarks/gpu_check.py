"""Checks of the trainer's model on a CUDA GPU (run where one is lent; CI has none).

The tiny LaViDa-O on a real collated batch (a text-to-image sample with a uint8 target from the
loader's transform, an anyres understanding sample, padding): the masked-diffusion loss and its
gradients on the GPU in fp32 equal the CPU's; under bf16 autocast they stay close and finite;
the VQ encodes uint8 targets on the GPU as it does float ones; the padding keys masked out, the
longest sample is the same alone and in the batch on the GPU's attention kernels; and a rough
step time. Writes a JSON report (``--json``) and exits 1 when a
check fails.

    python benchmarks/gpu_check.py --json gpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image

from lavida_data.transforms.tokenizer import build_tiny_tokenizer
from lavida_data.transforms.collate import collate
from lavida_data.transforms.images import ImageConfig, ImageTransform, siglip_anyres
from lavida_data.transforms.tokenize import Tokenize
from lavida_train import objective as obj
from lavida_train.model.presets import tiny_model

ICFG = ImageConfig(gen_size=256, und_size=56, anyres_grid=[(56, 112), (112, 56), (112, 112)])


def make_batch(tok_dir: str) -> dict:
    tokenize = Tokenize(tokenizer=tok_dir, gen_tokens=256, gen_enc_tokens=256)
    rng = np.random.default_rng(0)
    img = Image.fromarray((rng.random((260, 300, 3)) * 255).astype(np.uint8))
    t2i = {"conversations": [{"from": "human", "value": "Generate an image: a red bus. [[micro_conds_texts]]"},
                             {"from": "gpt", "value": "<image_gen>"}], "image_gen": "x"}
    t2i = ImageTransform(ICFG)(t2i, {"x": img}, rng)
    t2i.update(tokenize(t2i, rng))
    und = tokenize({"conversations": [{"from": "human", "value": "<image>\nWhat is it?"},
                                      {"from": "gpt", "value": "A cat, sitting."}], "image": "y"}, rng)
    pixels, size = siglip_anyres(Image.fromarray((rng.random((60, 100, 3)) * 255).astype(np.uint8)), ICFG)
    und["und_pixels"], und["und_sizes"] = [pixels], [size]
    return collate([t2i, und], tokenize.token_ids.pad)


def gen_pixels(batch: dict) -> torch.Tensor:
    px = batch["gen_pixels"]  # a list of targets per sample
    return px if isinstance(px, torch.Tensor) else torch.stack([p for per in px for p in per])


def to(batch: dict, device: str) -> dict:
    def move(v):
        if isinstance(v, torch.Tensor):
            return v.to(device)
        if isinstance(v, list):
            return [move(x) for x in v]
        return v
    return {k: move(v) for k, v in batch.items()}


MASK_ID = None  # the tokenizer's mask token, set in main


def loss_and_grads(model, batch: dict, device: str, autocast: bool) -> tuple[float, dict, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    # masks drawn on the CPU and moved: a CUDA generator draws other numbers for the same seed
    g = torch.Generator().manual_seed(1234)
    gen_ids = model.vq.encode_ids(gen_pixels(batch))
    input_ids, labels = batch["input_ids"], batch["labels"]
    d = obj.MaskDraws.draw(input_ids.shape[0], input_ids.shape[1], len(gen_ids), gen_ids[0].numel(), "uniform",
                           generator=g)
    masked_input, text_masked = obj.mask_text(input_ids.cpu(), labels.cpu(), d.t_text, d.u_text, MASK_ID)
    masked_gen, image_masked = obj.mask_image(gen_ids.cpu(), d.t_img, d.u_img, model.config.image_mask_id)
    masked_input, text_masked = masked_input.to(device), text_masked.to(device)
    masked_gen, image_masked = masked_gen.to(device), image_masked.to(device)
    key = torch.arange(input_ids.shape[1], device=device)[None] < batch["lengths"][:, None]
    with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=autocast):
        out = model(masked_input, gen_ids=masked_gen, gen_mask=batch["gen_mask"], und_pixels=batch["und_pixels"],
                    und_sizes=batch["und_sizes"], attention_mask=key, text_mask_id=MASK_ID)
        loss = obj.text_loss(out["text_logits"][text_masked].float(), labels[text_masked]) + \
            obj.image_loss(out["image_logits"].float(), gen_ids, image_masked)
    loss.backward()
    grads = {k: p.grad.detach().float().cpu() for k, p in model.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads, gen_ids.cpu()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json")
    args = p.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else None
    if device is None:
        print("no CUDA device", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    tok_dir = build_tiny_tokenizer(tempfile.mkdtemp(prefix="tok-"))
    report: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "checks": {}}
    checks = report["checks"]
    batch = make_batch(tok_dir)
    global MASK_ID
    MASK_ID = Tokenize(tokenizer=tok_dir).token_ids.mask
    assert gen_pixels(batch).dtype == torch.uint8

    model, cfg = tiny_model(tok_dir, seed=0, anyres_grid=ICFG.anyres_grid)
    model.train()
    cpu_loss, cpu_grads, cpu_ids = loss_and_grads(model, to(batch, "cpu"), "cpu", False)
    model.cuda()
    gb = to(batch, "cuda")
    gpu_loss, gpu_grads, gpu_ids = loss_and_grads(model, gb, "cuda", False)
    ids_agree = float((cpu_ids == gpu_ids).float().mean())
    diffs = sorted(((rel(gpu_grads[k], cpu_grads[k]), k, float(cpu_grads[k].norm())) for k in cpu_grads
                    if cpu_grads[k].norm() > 0), reverse=True)
    whole = rel(torch.cat([gpu_grads[k].flatten() for k in cpu_grads]), torch.cat([cpu_grads[k].flatten() for k in cpu_grads]))
    big = max(n for _, _, n in diffs)
    worst = max(d for d, _, n in diffs if n > 1e-4 * big)  # parameters whose gradient is not noise
    checks["fp32_cpu_vs_gpu"] = {"cpu_loss": cpu_loss, "gpu_loss": gpu_loss, "vq_ids_agree": ids_agree,
                                 "all_grads_rel_diff": whole, "worst_grad_rel_diff": worst,
                                 "largest_diffs": [[k, d, n] for d, k, n in diffs[:4]],
                                 "ok": ids_agree == 1.0 and abs(gpu_loss - cpu_loss) <= 1e-3 * abs(cpu_loss)
                                 and worst < 1e-2}
    bf_loss, bf_grads, _ = loss_and_grads(model, gb, "cuda", True)
    finite = all(torch.isfinite(g).all() for g in bf_grads.values())
    checks["bf16_autocast"] = {"loss": bf_loss, "fp32_loss": gpu_loss, "grads_finite": bool(finite),
                               "ok": finite and abs(bf_loss - gpu_loss) <= 3e-2 * abs(gpu_loss)}
    u8 = gen_pixels(gb)
    checks["vq_uint8_on_gpu"] = {"ok": bool(torch.equal(model.vq.encode_ids(u8), model.vq.encode_ids(u8.float() / 255)))}
    model.eval()
    with torch.no_grad():
        n0 = int(gb["lengths"][0])
        key = torch.arange(gb["input_ids"].shape[1], device="cuda")[None] < gb["lengths"][:, None]
        gen_ids = model.vq.encode_ids(u8)
        both = model(gb["input_ids"], gen_ids=gen_ids, gen_mask=gb["gen_mask"], und_pixels=gb["und_pixels"],
                     und_sizes=gb["und_sizes"], attention_mask=key)
        alone = model(gb["input_ids"][:1, :n0], gen_ids=gen_ids, gen_mask=gb["gen_mask"][:1, :n0])
    leak = float((both["image_logits"] - alone["image_logits"]).abs().max())
    checks["padding_does_not_leak_on_gpu"] = {"max_abs_diff": leak, "ok": leak < 1e-3}
    model.train()
    torch.cuda.synchronize()
    for _ in range(3):
        loss_and_grads(model, gb, "cuda", True)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        loss_and_grads(model, gb, "cuda", True)
    torch.cuda.synchronize()
    report["tiny_step_ms_bf16"] = (time.perf_counter() - t0) / 10 * 1e3
    report["ok"] = all(c["ok"] for c in checks.values())
    print(json.dumps(report, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
