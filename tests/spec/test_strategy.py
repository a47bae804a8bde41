import math
import random

import numpy as np
import pytest

from lavida_data import SamplingStrategy
from lavida_data.spec.strategy import stable_hash


@pytest.mark.parametrize(
    "text, kind, count, percent",
    [
        ("all", "all", None, None),
        ("full", "all", None, None),
        ("FULL", "all", None, None),
        ("first:10", "first", 10, None),
        ("end:3", "end", 3, None),
        ("random:200000", "random", 200000, None),
        ("dup:2", "dup", 2, None),
        ("first:50%", "first", None, "50"),
        ("random:12.5%", "random", None, "12.5"),
        ("end:0", "end", 0, None),  # upstream's rows[-0:]: every row
        ("end:0%", "end", None, "0"),
    ],
)
def test_parse(text, kind, count, percent):
    s = SamplingStrategy.parse(text)
    assert s.kind == kind and s.count == count
    assert (str(s.percent) if s.percent is not None else None) == percent


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("foo:3", "unknown sampling strategy kind 'foo'"),
        ("randm:3", "did you mean 'random'"),
        ("fulll", "did you mean 'full'"),
        ("dup:x", "positive integer or a percentage"),
        ("first:-3", "positive integer or a percentage"),
        ("first:0", "at least 1"),
        ("random:0", "at least 1"),
        ("dup:0", "at least 1"),
        ("first:0%", "(0%, 100%]"),
        ("first:150%", "(0%, 100%]"),
        ("dup:50%", "dup takes an integer"),
        ("all:3", "unknown sampling strategy kind 'all'"),
    ],
)
def test_parse_errors(text, fragment):
    with pytest.raises(ValueError) as e:
        SamplingStrategy.parse(text)
    assert fragment in str(e.value)


def test_percent_rounds_up():
    assert SamplingStrategy.parse("first:12.5%").resolve(10) == 2  # 1.25 -> 2
    assert SamplingStrategy.parse("end:50%").resolve(7) == 4
    assert SamplingStrategy.parse("random:100%").resolve(9) == 9


@pytest.mark.parametrize("pct", [1, 3, 7, 10, 33, 50, 67, 99, 100])
@pytest.mark.parametrize("rows", [0, 1, 7, 10, 99, 101, 12345, 10**9 + 7])
def test_whole_percentages_round_as_upstream(pct, rows):
    # upstream: math.ceil(int(pct) * rows / 100), in floating point
    assert SamplingStrategy.parse(f"first:{pct}%").resolve(rows) == math.ceil(int(pct) * rows / 100)


def test_select_ranges():
    assert SamplingStrategy.parse("first:3").select(10, seed=0, dataset="d").tolist() == [0, 1, 2]
    assert SamplingStrategy.parse("first:30").select(10, seed=0, dataset="d").tolist() == list(range(10))
    assert SamplingStrategy.parse("end:3").select(10, seed=0, dataset="d").tolist() == [7, 8, 9]
    assert SamplingStrategy.parse("end:30").select(10, seed=0, dataset="d").tolist() == list(range(10))
    assert SamplingStrategy.parse("end:0").select(10, seed=0, dataset="d").tolist() == list(range(10))
    assert SamplingStrategy.parse("end:0%").select(10, seed=0, dataset="d").tolist() == list(range(10))
    assert SamplingStrategy.parse("first:3").select(0, seed=0, dataset="d").tolist() == []
    assert SamplingStrategy.parse("dup:3").select(4, seed=0, dataset="d").tolist() == [0, 1, 2, 3]
    assert SamplingStrategy.parse("dup:3").repeat == 3


def test_random_is_upstreams_fixed_subset_not_global_state():
    s = SamplingStrategy.parse("random:50")
    np.random.seed(1)
    random.seed(1)
    a = s.select(1000, seed=42, dataset="laion")
    np.random.seed(2)
    random.seed(2)
    b = s.select(1000, seed=42, dataset="laion")
    assert a.tolist() == b.tolist()
    assert len(set(a.tolist())) == 50 and a.tolist() == sorted(a.tolist())
    # upstream's DataFrame.sample(random_state=42): neither the seed nor the name changes it
    assert a.tolist() == s.select(1000, seed=43, dataset="coyo").tolist()
    assert a.tolist() == sorted(np.random.RandomState(42).permutation(1000)[:50].tolist())
    state, fresh = np.random.get_state(), np.random.RandomState(2).get_state()
    assert np.array_equal(state[1], fresh[1]) and state[2] == fresh[2]  # global state untouched


def test_random_more_than_rows_is_an_error():
    with pytest.raises(ValueError, match="asks for 11 rows but only 10 remain"):
        SamplingStrategy.parse("random:11").select(10, seed=0, dataset="d")


def test_stable_hash_is_stable():
    # the same value in every process: a fixed function of the text, unlike hash()
    assert stable_hash("laion") == stable_hash("laion") != stable_hash("coyo")
    assert stable_hash("laion") < 2**64
