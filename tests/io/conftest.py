"""The fault-injecting proxy in front of the loopback S3 server (see :mod:`.faults`)."""

from __future__ import annotations

import pytest

from .faults import faulty_s3


@pytest.fixture
def proxy(s3_endpoint):
    """The proxy, faults off (``proxy.plan.enabled = True`` switches them on), this process and
    the ones it starts pointed at it with the tests' retry policy."""
    with faulty_s3(s3_endpoint) as p:
        yield p
