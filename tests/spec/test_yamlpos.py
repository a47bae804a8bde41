import pytest
import yaml

from lavida_data.spec.yamlpos import load_yaml


def test_positions_of_values_and_keys():
    loc = load_yaml("a: 1\nlist:\n  - x: 2\n  - {y: [1, 2]}\n", "f.yaml")
    assert loc.data == {"a": 1, "list": [{"x": 2}, {"y": [1, 2]}]}
    assert loc.values[("a",)] == (1, 4)
    assert loc.keys[("list", 0, "x")] == (3, 5)
    assert loc.values[("list", 1, "y", 1)] == (4, 13)
    assert loc.issues == []


def test_duplicate_keys_are_reported_with_both_lines():
    loc = load_yaml("a: 1\nb:\n  c: 1\n  c: 2\na: 3\n", "f.yaml")
    msgs = [(i.line, i.field, i.message) for i in loc.issues]
    assert [(m[0], m[1]) for m in msgs] == [(4, "b.c"), (5, "a")]
    assert "first given on line 3, again on line 4" in msgs[0][2]
    assert "first given on line 1, again on line 5" in msgs[1][2]
    # the last value counts, in the first one's place, as yaml.safe_load has it; a warning
    assert loc.data == yaml.safe_load("a: 1\nb:\n  c: 1\n  c: 2\na: 3\n") == {"a": 3, "b": {"c": 2}}
    assert list(loc.data) == ["a", "b"] and loc.values[("a",)] == (5, 4) and loc.keys[("b", "c")] == (4, 3)
    assert {i.severity for i in loc.issues} == {"warning"}


def test_a_repeated_key_forgets_the_positions_of_the_earlier_value():
    loc = load_yaml("m:\n  x: {deep: 1}\n  x: 2\n", "f.yaml")
    assert loc.data == {"m": {"x": 2}}
    assert ("m", "x", "deep") not in loc.values and ("m", "x", "deep") not in loc.keys


def test_safe_load_semantics():
    # no python objects; the same values safe_load gives, anchors and merges included
    text = "base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\nwhen: 2024-01-02\n"
    assert load_yaml(text).data == yaml.safe_load(text)
    with pytest.raises(yaml.YAMLError):
        load_yaml("a: !!python/object/apply:os.system ['true']\n")


def test_where_falls_back_to_parent():
    loc = load_yaml("datasets:\n  - name: a\n", "f.yaml")
    assert loc.where(("datasets", 0, "missing_key")) == (2, 5)
