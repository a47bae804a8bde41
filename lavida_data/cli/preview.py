"""``lavida-data preview MIXTURE``: convert the first rows of each dataset straight from the source tables, and show
them as JSON or as one self-contained HTML page (images embedded) for a person to look at."""

from __future__ import annotations

import argparse
import base64
import html
import itertools
import json
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from rich.console import Console

from lavida_data.cli.output import err, print_issues, print_json, progress
from lavida_data.convert.sample import IMAGE_ROLES, image_paths
from lavida_data.prepare.rows import Stats, iter_samples
from lavida_data.spec.plan import DatasetPlan


@dataclass
class PreviewItem:
    dataset: str
    id: str
    sample: dict

    def to_json(self) -> dict:
        return {"dataset": self.dataset, "id": self.id, "sample": self.sample}


def preview(
    plans: Iterable[DatasetPlan], *, n: int, seed: int, on_dataset: Callable[[str], None] | None = None
) -> tuple[list[PreviewItem], dict[str, Stats]]:
    """The first ``n`` samples of each dataset (epoch 0, positions 0..), and each one's counts."""
    items: list[PreviewItem] = []
    stats: dict[str, Stats] = {}
    for plan in plans:
        st = stats[plan.name] = Stats()
        for sample in itertools.islice(iter_samples(plan, seed, stats=st), n):
            items.append(PreviewItem(plan.name, sample["id"], sample))
        if on_dataset is not None:
            on_dataset(plan.name)
    return items, stats


_MARKER = re.compile(r"(&lt;(?:image|image_gen|image_gen_enc|image_gen_fake)&gt;|\[\[micro_conds_texts\]\])")

_MARK = r"<span class=mk>\1</span>"

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;background:#f6f7f9;color:#1d2330}
h1{font-size:20px} .meta{color:#5b6475;font-size:12px}
.sample{background:#fff;border:1px solid #dde1e8;border-radius:8px;margin:16px 0;padding:14px;
display:grid;grid-template-columns:minmax(220px,340px) 1fr;gap:16px}
.images{display:flex;flex-wrap:wrap;gap:10px;align-content:flex-start}
.images figure{margin:0;width:150px} .images img{max-width:100%;border:1px solid #ccd;display:block}
figcaption{font-size:11px;color:#5b6475;word-break:break-all}
.role{display:inline-block;font-size:11px;padding:1px 6px;border-radius:9px;background:#e4e9ff;color:#2b3f9e}
.missing{padding:20px;background:#fff0f0;border:1px dashed #d55;color:#a22;font-size:12px}
.turn{margin:6px 0;padding:8px 10px;border-radius:6px;white-space:pre-wrap;word-break:break-word}
.human{background:#eef3ff} .gpt{background:#effaf1} .who{font-weight:600;font-size:12px;color:#445}
.mk{background:#ffe7b3;border-radius:4px;padding:0 3px;font-family:monospace}
.extra{font-family:monospace;font-size:12px;color:#445}
"""


def _image_html(path: str, role: str, index: int) -> str:
    from lavida_data.io.images import thumbnail_jpeg

    label = f'<span class="role">{role}{f" {index}" if index else ""}</span>'
    try:
        data, (w, h) = thumbnail_jpeg(path)
    except Exception as e:
        return (f'<figure>{label}<div class="missing">image not loaded: {html.escape(type(e).__name__)}: '
                f"{html.escape(str(e))}</div><figcaption>{html.escape(path)}</figcaption></figure>")
    src = "data:image/jpeg;base64," + base64.b64encode(data).decode()
    return (f'<figure>{label}<img src="{src}" data-role="{role}" alt="{html.escape(path)}">'
            f"<figcaption>{html.escape(path)} ({w}&times;{h})</figcaption></figure>")


def _sample_html(item: PreviewItem) -> str:
    s = item.sample
    figs = [_image_html(p, role, i) for role in IMAGE_ROLES for i, p in enumerate(image_paths(s, role))]
    turns = "".join(
        f'<div class="turn {html.escape(t["from"])}"><div class="who">{html.escape(t["from"])}</div>'
        f'{_MARKER.sub(_MARK, html.escape(t["value"]))}</div>'
        for t in s["conversations"]
    )
    extra = {k: v for k, v in s.items() if k not in ("id", "conversations", *IMAGE_ROLES)}
    extra_html = "".join(f"<div>{html.escape(k)}: {html.escape(repr(v))}</div>" for k, v in extra.items())
    return (f'<section class="sample" id="{html.escape(item.id)}"><div class="images">'
            f'{"".join(figs) or "<div class=meta>(no images)</div>"}</div><div>'
            f'<div class="meta">{html.escape(item.id)}</div>{turns}<div class="extra">{extra_html}</div></div></section>')


def render_html(items: list[PreviewItem], stats: dict[str, Stats], title: str) -> str:
    """One self-contained page: each sample's images beside its conversation."""
    counts = "".join(
        f"<li>{html.escape(name)}: {st.rows_read} rows read, {st.rows_kept} kept"
        f"{', dropped ' + html.escape(str(dict(st.dropped))) if sum(st.dropped.values()) else ''}"
        f"{', skipped ' + html.escape(str(dict(st.skipped))) if sum(st.skipped.values()) else ''}</li>"
        for name, st in stats.items()
    )
    body = "".join(_sample_html(i) for i in items)
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1><ul class=meta>{counts}</ul>"
            f"{body}</body></html>")


def cmd_preview(args: argparse.Namespace) -> int:
    from lavida_data.spec.validate import validate_file

    report = validate_file(args.config, offline=False, strict=args.strict)
    if not report.valid:
        print_issues(report)
        return 1
    mixture = report.mixture
    plans = list(report.plans.values())
    if args.dataset:
        if args.dataset not in report.plans:
            mixture.dataset(args.dataset)  # raises with a suggestion
        plans = [report.plans[args.dataset]]
    seed = mixture.seed if args.seed is None else args.seed
    with progress(not args.json and sys.stderr.isatty()) as bar:
        task = bar.add_task("converting", total=len(plans))
        items, stats = preview(plans, n=args.n, seed=seed, on_dataset=lambda _: bar.advance(task))
    if args.html:
        os.makedirs(os.path.dirname(os.path.abspath(args.html)), exist_ok=True)
        with open(args.html, "w", encoding="utf-8") as f:
            f.write(render_html(items, stats, f"lavida-data preview: {os.path.basename(args.config)}"))
        err.print(f"wrote {args.html} ({len(items)} samples)", markup=False)
    if args.json:
        print_json([i.to_json() for i in items])
    elif not args.html:
        for i in items:
            Console(highlight=False).print_json(json.dumps(i.to_json(), default=str))
    for name, st in stats.items():
        lost = sum(st.dropped.values()) + sum(st.skipped.values())
        if lost:
            err.print(f"{name}: {st.to_json()}", style="yellow", markup=False, soft_wrap=True)
    return 0


def add_command(sub: Any) -> None:
    pv = sub.add_parser("preview", help="convert the first rows of each dataset, straight from the tables")
    pv.add_argument("config")
    pv.add_argument("--dataset", help="only this dataset")
    pv.add_argument("-n", type=int, default=3, help="samples per dataset (default 3)")
    pv.add_argument("--seed", type=int, help="override the mixture's seed")
    pv.add_argument("--json", action="store_true")
    pv.add_argument("--html", metavar="OUT.html", help="write a page showing each sample's images and text")
    pv.add_argument("--strict", action="store_true", help="refuse a mixture with warnings, as `validate --strict`")
    pv.set_defaults(fn=cmd_preview)
