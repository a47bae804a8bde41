"""The preview page, opened in a real browser (Debian's chromium, headless) and looked at."""

import shutil
import subprocess

import pytest
from PIL import Image

from tests.support import EXAMPLES

pytestmark = pytest.mark.browser


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError("chromium is not installed: `bash scripts/dev.sh test` installs it (apt-get install chromium)")


def screenshot(page, png, tmp_path, size=(1200, 1600)):
    subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chromium-profile'}", f"--window-size={size[0]},{size[1]}",
         "--hide-scrollbars", f"--screenshot={png}", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    return Image.open(png).convert("RGB")


def count_near(img, rgb, tol=40):
    r0, g0, b0 = rgb
    return sum(1 for r, g, b in img.getdata() if abs(r - r0) < tol and abs(g - g0) < tol and abs(b - b0) < tol)


def test_preview_page_shows_the_images_beside_the_text(cli, tmp_path):
    # the page alone, in an empty folder: everything it shows must be embedded in it
    page = tmp_path / "page" / "edit.html"
    cli("preview", EXAMPLES / "mixtures" / "edit.yaml", "--dataset", "gpt-edit", "-n", "1", "--html", page,
        check_rc=0)
    html = page.read_text()
    assert "file://" not in html and html.count("<img ") == 3  # image, image_gen, image_gen_enc
    shot = screenshot(page, tmp_path / "shot.png", tmp_path)
    # gpt-edit's first sample (row 0: `random:N` takes upstream's rows, in table order) turns a red
    # circle into a red square
    red = count_near(shot, (220, 40, 40))
    green = count_near(shot, (40, 170, 70))
    # two red circles (image, image_gen_enc) of ~4600 pixels each, one red square of ~5600
    assert 13000 < red < 16500 and green < 200, (red, green)
    # the conversation is rendered as text beside the images, not as raw markup
    assert "Turn the red circle into a red square." in html and "&lt;image_gen_enc&gt;" in html


def test_an_unreadable_image_is_shown_as_missing(cli, tmp_path, examples_copy):
    (examples_copy / "data" / "images" / "00-red-circle.jpg").write_bytes(b"not a jpeg")
    page = tmp_path / "refcoco.html"
    cli("preview", examples_copy / "mixtures" / "und-grounding.yaml", "--dataset", "grandf", "-n", "2",
        "--html", page, check_rc=0)
    html = page.read_text()
    assert html.count("image not loaded") == 1 and html.count("<img ") == 1
    shot = screenshot(page, tmp_path / "shot.png", tmp_path)
    # row 0's red circle is a pink "missing" box; row 1's red square is drawn
    red, missing = count_near(shot, (220, 40, 40)), count_near(shot, (255, 240, 240), tol=6)
    assert 5000 < red < 7000 and missing > 5000, (red, missing)  # one square of ~5900 pixels
