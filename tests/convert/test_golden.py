"""Our 15 converters against upstream LaViDa-O's own functions (tests/golden/converters/*.json).

For every stored case, the set of samples ours makes over many seeds equals the set upstream can
make (both inclusions), and ours skips with a reason exactly where upstream raises, bar the
deliberate differences listed in ``golden.DEVIATIONS``.
"""

from __future__ import annotations

import os

import pydantic
import pytest

import lavida_data

from .golden import DEVIATIONS, GOLDEN, REASON, UPSTREAM_KWARGS, describe, expected, load_cases, run_ours

CASES = load_cases()


def test_fixtures_cover_the_fifteen_converters():
    names = {c.function for c in CASES}
    assert names == set(UPSTREAM_KWARGS) and len(names) == 15
    assert len(os.listdir(GOLDEN)) == 15
    for name in names:
        assert lavida_data.registry.get(name).name == name


@pytest.mark.parametrize("name", sorted(UPSTREAM_KWARGS))
def test_fixtures_exercise_every_upstream_option(name):
    used = set().union(*(c.options for c in CASES if c.function == name))
    assert UPSTREAM_KWARGS[name] <= used


@pytest.mark.parametrize("name", sorted(UPSTREAM_KWARGS))
def test_our_options_accept_every_upstream_option(name):
    fields = set(lavida_data.registry.get(name).options.model_fields)
    assert UPSTREAM_KWARGS[name] <= fields


def test_every_deviation_names_a_stored_case():
    ids = {(c.function, c.id) for c in CASES}
    assert set(DEVIATIONS) <= ids


@pytest.mark.parametrize("case", CASES, ids=str)
def test_same_outputs_as_upstream(case):
    want = expected(case)
    if want.options_rejected:
        with pytest.raises(pydantic.ValidationError):
            lavida_data.registry.get(case.function).parse_options(case.options)
        return
    seen = run_ours(case, want)
    extra, unreached = seen.outputs - want.outputs, want.outputs - seen.outputs
    assert not extra, f"outputs upstream cannot make: {describe(extra)}"
    assert not unreached, f"upstream outputs ours never made in {seen.runs} seeds: {describe(unreached)}"
    if want.skips:
        assert seen.reasons, f"upstream raises {case.raises}; ours never skipped"
        assert all(REASON.match(r) for r in seen.reasons), seen.reasons
        if want.reason is not None:
            assert seen.reasons == {want.reason}
    else:
        assert not seen.reasons, f"ours skipped ({seen.reasons}) a row upstream always converts"


def test_no_fixture_case_is_trivially_empty():
    for case in CASES:
        assert case.outputs or case.raises, str(case)
