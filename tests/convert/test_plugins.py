"""Converters from other distributions, through the ``lavida_data.converters`` entry points.

The test installs two real distributions kept under tests/plugins into this environment (and
removes them afterwards): one that registers converters, one that fails to import.
"""

import json
import subprocess
import sys

import pytest

from tests.support import ROOT

PLUGINS = ROOT / "tests" / "plugins"
DISTS = ["lavida-plugin-demo", "lavida-plugin-broken"]


def pip(*args):
    subprocess.run([sys.executable, "-m", "pip", *args], check=True, capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def installed_plugins(tmp_path_factory):
    build = tmp_path_factory.mktemp("plugin-build")
    for name in ("demo", "broken"):  # build from a copy: the source tree stays clean
        import shutil

        shutil.copytree(PLUGINS / name, build / name)
        pip("install", "--no-deps", "--no-build-isolation", "--quiet", str(build / name))
    yield
    pip("uninstall", "--yes", *DISTS)


def test_plugins_are_registered_and_the_broken_one_reported(installed_plugins, cli):
    proc = cli("converters", "--json", check_rc=0)
    by_name = {c["name"]: c for c in json.loads(proc.stdout)}
    assert by_name["shout_caption"]["source"] == "lavida-plugin-demo 0.1.0"
    assert by_name["shout_caption"]["aliases"] == ["shout"]
    assert by_name["shout_caption"]["columns"] == {"required": ["s3_path", "caption"], "optional": []}
    assert "exclaim" in by_name["shout_caption"]["options"]
    assert by_name["reverse_caption"]["source"] == "lavida-plugin-demo 0.1.0"
    assert sum(c["source"] == "builtin" for c in by_name.values()) == 15
    assert "broken_converter" not in by_name
    assert "lavida-plugin-broken" in proc.stderr and "lavida_plugin_missing_dependency" in proc.stderr


def test_plugin_converter_validates_options_and_converts(installed_plugins, cli, tmp_path):
    (tmp_path / "t.jsonl").write_text(json.dumps({"s3_path": "a.jpg", "caption": "a red fox"}) + "\n")
    mix = tmp_path / "m.yaml"
    mix.write_text("datasets:\n  - name: foxes\n    path: t.jsonl\n    preprocess_fn: shout\n"
                   "    process_fn_kwargs: {exclaim: 2}\n    image_root: /data\n")
    out = json.loads(cli("preview", mix, "--json", check_rc=0).stdout)
    assert out == [{"dataset": "foxes", "id": "foxes:0", "sample": {
        "conversations": [
            {"from": "human", "value": "Generate an image with the caption: A RED FOX!! [[micro_conds_texts]]"},
            {"from": "gpt", "value": "Sure <image_gen>"}],
        "image_gen": "/data/a.jpg", "id": "foxes:0"}}]
    mix.write_text("datasets:\n  - name: foxes\n    path: t.jsonl\n    preprocess_fn: shout_caption\n"
                   "    process_fn_kwargs: {exclaims: 2}\n")
    errors = json.loads(cli("validate", mix, "--json", check_rc=1).stdout)["errors"]
    assert [(e["line"], e["field"]) for e in errors] == [(5, "process_fn_kwargs.exclaims")]
    assert "did you mean 'exclaim'" in errors[0]["message"]


def test_a_broken_plugin_does_not_break_the_builtins(installed_plugins, cli):
    proc = cli("validate", ROOT / "examples" / "mixtures" / "edit.yaml", check_rc=0)
    assert "valid (7 datasets)" in proc.stderr
