"""Make upstream LaViDa-O's data functions importable in a scratch folder, for the golden fixtures.

Not run by the tests. Upstream's code never enters this repository: this copies the few modules
the data path needs from a checkout you have (``git clone`` of adobe-research/LaVida-O at commit
e3a80df) into a scratch folder outside the repository, and writes stubs for what they import but
do not need (logging helpers, video readers, the internal image store).

    from upstream_env import load_upstream
    up = load_upstream("/path/to/LaVida-O")      # -> the scratch folder, on sys.path
    from llava.train.data.text_image import preproces_text_to_image_generation_s3
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

#: upstream files the data path imports (relative to the checkout)
FILES = (
    "llava/constants.py",
    "llava/mm_utils.py",
    "llava/conversation.py",
    "llava/train/infill_utils.py",
    "llava/train/data/datasets.py",
    "llava/train/data/get_mask.py",
    "llava/train/data/interleaved.py",
    "llava/train/data/preprocess.py",
    "llava/train/data/process_functions.py",
    "llava/train/data/sampler.py",
    "llava/train/data/text_image.py",
    "llava/train/data/und.py",
    "llava/train/data/utils.py",
    "llava/model/multimodal_encoder/siglip_encoder.py",
)

STUB_UTILS = '''# stub of llava/utils.py: only the names the data code imports
def rank0_print(*args, **kwargs):
    pass
def process_video_with_pyav(*a, **k):
    raise NotImplementedError
def process_video_with_decord(*a, **k):
    raise NotImplementedError
'''


def load_upstream(checkout: str, scratch: str | None = None) -> str:
    """Copy upstream's data modules into ``scratch`` (a new temporary folder by default), add the
    stubs, put it first on ``sys.path`` and return it. Hub downloads are switched off."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    scratch = scratch or tempfile.mkdtemp(prefix="lavida-upstream-")
    for rel in FILES:
        dst = os.path.join(scratch, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(os.path.join(checkout, rel), dst)
    for pkg in ("llava", "llava/train", "llava/train/data", "llava/model", "llava/model/multimodal_encoder"):
        open(os.path.join(scratch, pkg, "__init__.py"), "a").close()
    with open(os.path.join(scratch, "llava/utils.py"), "w") as f:
        f.write(STUB_UTILS)
    if scratch not in sys.path:
        sys.path.insert(0, scratch)
    return scratch


if __name__ == "__main__":
    print(load_upstream(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))
