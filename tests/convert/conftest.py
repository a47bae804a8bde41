"""Shared helpers of the converter tests: run a converter the way the library does."""

from __future__ import annotations

import random

import pytest

import lavida_data


def _convert(name, row, options=None, *, dataset="d", row_index=7, seed=1, epoch=0, position=3, image_root=None):
    conv = lavida_data.registry.get(name)
    opts = conv.parse_options(options or {})
    return lavida_data.convert_row(
        conv, opts, row, dataset=dataset, row_index=row_index, seed=seed, epoch=epoch,
        position=position, image_root=image_root,
    )


@pytest.fixture
def convert():
    """``convert(name, row, options=None, **where)`` -> the sample ``convert_row`` makes."""
    return _convert


@pytest.fixture
def reason():
    """``reason(name, row, options=None, **where)`` -> the ``SampleError.reason`` the row raises."""

    def _reason(name, row, options=None, **kw):
        with pytest.raises(lavida_data.SampleError) as ei:
            _convert(name, row, options, **kw)
        return ei.value.reason

    return _reason


@pytest.fixture
def check_deterministic():
    """Asserts that a converter's output depends on (seed, epoch, position) only: equal for
    equal arguments whatever the global ``random`` state, and leaving that state untouched."""

    def _check(name, row, options=None, **kw):
        random.seed(0)
        a = _convert(name, row, options, **kw)
        random.seed(987654321)
        state = random.getstate()
        b = _convert(name, row, options, **kw)
        assert random.getstate() == state, "the converter used the global random generator"
        assert a == b
        return a

    return _check

