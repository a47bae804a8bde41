"""The ``lavida-data`` command as a user runs it."""

import json

from tests.support import EXAMPLES

T2I = EXAMPLES / "mixtures" / "t2i.yaml"


def test_validate_valid_and_invalid(cli, tmp_path):
    proc = cli("validate", T2I, "--json", check_rc=0)
    assert json.loads(proc.stdout) == {"valid": True, "errors": [], "warnings": []}
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets:\n  - name: a\n    path: x.parquet\n    preprocess_fn: t2i\n    min_siz: 3\n")
    proc = cli("validate", bad, "--offline", check_rc=1)
    assert f"{bad}:5:5: error [dataset 'a', field 'min_siz']: unknown key 'min_siz'" in proc.stderr
    assert "did you mean 'min_size'" in proc.stderr
    out = json.loads(cli("validate", bad, "--json", check_rc=1).stdout)
    # offline off: the missing table is reported too, in the same run
    assert [(e["line"], e["field"]) for e in out["errors"]] == [(3, "path"), (5, "min_siz")]
    assert set(out["errors"][0]) == {"file", "line", "column", "dataset", "field", "message"}


def test_validate_strict_turns_warnings_into_errors(cli, tmp_path):
    # a repeated name and a weight for an unused group: upstream accepts both, so they are warnings
    text = (T2I.read_text().replace("name: coyo-recap", "name: laion-aes")
            .replace("weights: {t2i: 250, plan: 100}", "weights: {t2i: 250, plan: 100, mjv6: 20}")
            .replace("../data", str(EXAMPLES / "data")))
    f = tmp_path / "strict-check.yaml"
    f.write_text(text)
    proc = cli("validate", f, check_rc=0)
    assert "valid (6 datasets, 2 warnings)" in proc.stderr
    assert "warning [dataset 'laion-aes~2', field 'name']: dataset name 'laion-aes' is already used" in proc.stderr
    assert "warning [field 'weights.mjv6']" in proc.stderr
    out = json.loads(cli("validate", f, "--json", "--strict", check_rc=1).stdout)
    assert out["valid"] is False and out["warnings"] == []
    assert [e["field"] for e in out["errors"]] == ["weights.mjv6", "name"]
    ids = [i["id"] for i in json.loads(cli("preview", f, "--dataset", "laion-aes~2", "-n", "1", "--json",
                                          check_rc=0).stdout)]
    assert ids == ["laion-aes~2:0"]
    proc = cli("preview", f, "--strict", "--json", check_rc=1)
    assert "error [field 'weights.mjv6']" in proc.stderr and proc.stdout == ""


def test_validate_missing_file(cli, tmp_path):
    proc = cli("validate", tmp_path / "nope.yaml", "--json", check_rc=1)
    assert "cannot read the mixture file" in json.loads(proc.stdout)["errors"][0]["message"]


def test_converters_json_shape(cli):
    items = json.loads(cli("converters", "--json", check_rc=0).stdout)
    assert all(set(i) == {"name", "aliases", "source", "options", "columns"} for i in items)
    t2i = next(i for i in items if i["name"] == "preproces_text_to_image_generation_s3")
    assert "t2i" in t2i["aliases"] and t2i["options"]["max_caption_length"]["default"] == 800
    assert t2i["columns"] == {"required": ["s3_path", "caption"], "optional": ["fltLaionAesthScore", "hpsv2"]}
    text = cli("converters", check_rc=0).stdout
    assert "process_uniworld" in text and "aliases:" in text


def test_preview_json_one_dataset(cli):
    out = json.loads(cli("preview", T2I, "--dataset", "laion-aes", "-n", "2", "--json", check_rc=0).stdout)
    # score 4.5 + 0.25 i must exceed 5.0 (rows 0..2 fail), height 48 on rows 0, 5, 10 fails min_size
    assert [i["id"] for i in out] == ["laion-aes:3", "laion-aes:4"]
    assert {i["dataset"] for i in out} == {"laion-aes"}
    sample = out[0]["sample"]
    assert sample["conversations"][1] == {"from": "gpt", "value": "Sure <image_gen>"}
    assert sample["image_gen"].endswith("examples/data/images/03-green-circle.jpg")
    assert sample["gen_score"] == [5.25]  # upstream: a list, one score per generation target


def test_preview_is_reproducible_and_seed_matters(cli):
    args = ("preview", T2I, "--dataset", "coyo-recap", "-n", "8", "--json")
    a = cli(*args, check_rc=0).stdout
    assert cli(*args, check_rc=0).stdout == a
    captions = {json.dumps(i["sample"]["conversations"]) for i in json.loads(a)}
    other = {json.dumps(i["sample"]["conversations"]) for i in json.loads(cli(*args, "--seed", "77", check_rc=0).stdout)}
    assert captions != other  # the caption column is drawn per sample from the seed


def test_preview_unknown_dataset(cli):
    proc = cli("preview", T2I, "--dataset", "laion-ae", check_rc=2)
    assert "did you mean 'laion-aes'" in proc.stderr


def test_preview_refuses_an_invalid_mixture(cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets:\n  - name: a\n    path: x.parquet\n    preprocess_fn: nope\n")
    proc = cli("preview", bad, "--json", check_rc=1)
    assert "unknown preprocess_fn 'nope'" in proc.stderr and proc.stdout == ""


def test_import_help_lists_every_kind_without_loading_importers_at_start():
    import subprocess
    import sys

    code = ("import sys\nfrom lavida_data.cli import build_parser\nbuild_parser()\n"
            "print('lavida_data.importers' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
    from lavida_data.cli import build_parser
    from lavida_data.importers import load_all

    help_text = build_parser()._subparsers._group_actions[0].choices["import"].format_help()
    assert all(kind in help_text for kind in load_all())
