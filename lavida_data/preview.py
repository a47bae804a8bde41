"""Preview: convert the first rows of each dataset straight from the source tables, and show
them as JSON or as one self-contained HTML page (images embedded) for a person to look at."""

from __future__ import annotations

import base64
import html
import itertools
import re
from dataclasses import dataclass
from typing import Callable, Iterable

from .plan import DatasetPlan
from .reader import Stats, iter_samples
from .sample import IMAGE_ROLES, image_paths


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
    from .images import thumbnail_jpeg

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
