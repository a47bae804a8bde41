"""The one retry policy of every storage operation, and its settings.

Two levels, both bounded: botocore retries each request in its own retry mode (``standard`` by
default: exponential backoff with jitter, throttling backing off longer; ``adaptive`` adds
client-side rate limiting) up to ``request_attempts`` times; around it this layer retries the
whole operation (request, body read, length check) up to ``attempts`` times with full-jitter
exponential backoff (``uniform(0, min(backoff_max, backoff * 2**try))`` seconds), so faults that
botocore cannot see (a body cut short, a stall half-way through a body) or that outlast its
retry quota are retried too. Permanent faults are raised at once (see :mod:`.errors`).

Settings come from the environment, so that worker processes (DataLoader workers, Ray tasks)
follow the same policy: ``LAVIDA_S3_ATTEMPTS`` (8: about a minute of waits at most), ``LAVIDA_S3_BACKOFF`` (0.5 s),
``LAVIDA_S3_BACKOFF_MAX`` (20 s), ``LAVIDA_S3_RETRY_MODE`` (standard | adaptive | legacy),
``LAVIDA_S3_REQUEST_ATTEMPTS`` (3), ``LAVIDA_S3_CONNECT_TIMEOUT`` (10 s),
``LAVIDA_S3_READ_TIMEOUT`` (60 s).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections import Counter
from typing import Callable, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from lavida_data.io.errors import StorageUnavailable, describe, is_transient, translate

T = TypeVar("T")
log = logging.getLogger("lavida_data.io")
ENV = {
    "attempts": "LAVIDA_S3_ATTEMPTS",
    "backoff": "LAVIDA_S3_BACKOFF",
    "backoff_max": "LAVIDA_S3_BACKOFF_MAX",
    "retry_mode": "LAVIDA_S3_RETRY_MODE",
    "request_attempts": "LAVIDA_S3_REQUEST_ATTEMPTS",
    "connect_timeout": "LAVIDA_S3_CONNECT_TIMEOUT",
    "read_timeout": "LAVIDA_S3_READ_TIMEOUT",
}


class RetryPolicy(BaseModel):
    """How transient storage faults are retried (see the module doc)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(8, ge=1, description="tries of one operation by this layer")
    backoff: float = Field(0.5, ge=0, description="seconds: the first retry waits up to this, doubling each try")
    backoff_max: float = Field(20.0, ge=0)
    retry_mode: Literal["standard", "adaptive", "legacy"] = "standard"
    request_attempts: int = Field(3, ge=1, description="botocore's total_max_attempts of one request")
    connect_timeout: float = Field(10.0, gt=0)
    read_timeout: float = Field(60.0, gt=0)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait before try ``attempt + 1`` (``attempt`` counts from 0): full jitter."""
        return (rng or _jitter).uniform(0, min(self.backoff_max, self.backoff * 2**attempt))


_jitter = random.Random()  # timing only: never used for data
_cache: dict[tuple, RetryPolicy] = {}
_lock = threading.Lock()
#: retries done in this process, by operation (a test and a report read it)
retries: Counter = Counter()


def current_policy() -> RetryPolicy:
    """The policy the environment sets (read again when it changes)."""
    key = tuple(os.environ.get(v) for v in ENV.values())
    with _lock:
        policy = _cache.get(key)
        if policy is None:
            given = {k: os.environ[v] for k, v in ENV.items() if os.environ.get(v)}
            policy = _cache[key] = RetryPolicy.model_validate(given)
        return policy


def retrying(op: str, uri: str, fn: Callable[[], T], policy: RetryPolicy | None = None) -> T:
    """``fn()``, tried again on transient faults; a permanent fault is raised at once naming ``uri``."""
    policy = policy or current_policy()
    start = time.monotonic()
    last: BaseException | None = None
    for attempt in range(policy.attempts):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - classified below
            if not is_transient(e):
                permanent = translate(e, uri)
                if permanent is e:
                    raise
                raise permanent from e
            last = e
        retries[op] += 1
        if attempt + 1 < policy.attempts:
            wait = policy.delay(attempt)
            log.debug("%s %s: %s; try %d in %.2fs", op, uri, describe(last), attempt + 2, wait)
            time.sleep(wait)
    assert last is not None
    raise StorageUnavailable(uri, op, policy.attempts, time.monotonic() - start, last) from last


class Attempts:
    """The tries of a long read that resumes where it stopped: the count starts again after each
    try that made progress, so a body cut short over and over still ends, and a dead store fails."""

    def __init__(self, op: str, uri: str, policy: RetryPolicy | None = None):
        self.op, self.uri = op, uri
        self.policy = policy or current_policy()
        self.failed = 0
        self.start = time.monotonic()

    def progressed(self) -> None:
        self.failed = 0

    def failure(self, e: BaseException) -> None:
        """Wait before the next try, or raise when ``e`` is permanent or the tries are used up."""
        if not is_transient(e):
            permanent = translate(e, self.uri)
            if permanent is e:
                raise e
            raise permanent from e
        retries[self.op] += 1
        self.failed += 1
        if self.failed >= self.policy.attempts:
            raise StorageUnavailable(self.uri, self.op, self.failed, time.monotonic() - self.start, e) from e
        time.sleep(self.policy.delay(self.failed - 1))
