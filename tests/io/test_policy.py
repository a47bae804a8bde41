"""The retry policy and what each fault means, without a network: which faults are transient,
that retries are bounded and back off with jitter, that permanent faults fail at once naming the
object, and that a lasting transient fault is never an ``OSError`` (never counted as bad data)."""

from __future__ import annotations

import http.client

import pytest
from botocore.exceptions import (ClientError, ConnectionClosedError, EndpointConnectionError, IncompleteReadError,
                                 ReadTimeoutError, ResponseStreamingError)

from lavida_data.io import policy as pol
from lavida_data.io.errors import (
    ObjectChanged,
    ShortRead,
    StorageError,
    StorageUnavailable,
    is_transient,
    translate,
)
from lavida_data.io.policy import Attempts, RetryPolicy, current_policy, retrying

URI = "s3://bucket/some/key.jpg"


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "GetObject")


TRANSIENT = [client_error("SlowDown", 503), client_error("InternalError", 500), client_error("503", 503),
             client_error("IncompleteBody", 400), client_error("RequestTimeout", 400),
             client_error("TooManyRequestsException", 429), client_error("ServiceUnavailable", 503),
             ReadTimeoutError(endpoint_url="http://x"), ConnectionClosedError(endpoint_url="http://x"),
             EndpointConnectionError(endpoint_url="http://x"), ResponseStreamingError(error="reset"),
             IncompleteReadError(actual_bytes=5, expected_bytes=10), ConnectionResetError("reset"),
             TimeoutError("slow"), http.client.IncompleteRead(b"x", 5), ShortRead("5 of 10 bytes")]
PERMANENT = [(client_error("NoSuchKey", 404), FileNotFoundError), (client_error("404", 404), FileNotFoundError),
             (client_error("AccessDenied", 403), PermissionError), (client_error("403", 403), PermissionError),
             (client_error("InvalidRange", 416), StorageError), (client_error("PreconditionFailed", 412), ObjectChanged),
             (FileNotFoundError("x"), FileNotFoundError), (ValueError("bad"), ValueError)]


@pytest.fixture
def no_sleep(monkeypatch):
    sleeps: list[float] = []
    monkeypatch.setattr(pol.time, "sleep", sleeps.append)
    for k in pol.ENV.values():
        monkeypatch.delenv(k, raising=False)
    return sleeps


@pytest.mark.parametrize("exc", TRANSIENT, ids=lambda e: type(e).__name__ + ":" + str(getattr(e, "response", "")))
def test_transient_faults(exc):
    assert is_transient(exc)


@pytest.mark.parametrize("exc, kind", PERMANENT, ids=lambda x: getattr(x, "__name__", type(x).__name__))
def test_permanent_faults_name_the_object(exc, kind):
    assert not is_transient(exc)
    out = translate(exc, URI)
    assert isinstance(out, kind)
    if isinstance(out, OSError) and out is not exc:
        assert URI in str(out) and "testing-secret" not in str(out)


def test_transient_faults_are_retried_with_bounded_jittered_backoff(no_sleep):
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 4:
            raise TRANSIENT[len(calls)]
        return b"data"

    policy = RetryPolicy(attempts=5, backoff=0.1, backoff_max=0.25)
    assert retrying("GET", URI, flaky, policy) == b"data"
    assert len(calls) == 4 and len(no_sleep) == 3
    assert all(0 <= s <= min(0.25, 0.1 * 2**i) for i, s in enumerate(no_sleep))


def test_a_permanent_fault_fails_at_once(no_sleep):
    calls = []

    def missing():
        calls.append(1)
        raise client_error("NoSuchKey", 404)

    with pytest.raises(FileNotFoundError, match=f"{URI}: no such object"):
        retrying("GET", URI, missing, RetryPolicy(attempts=5))
    assert len(calls) == 1 and no_sleep == []


def test_a_lasting_transient_fault_is_bounded_and_never_an_oserror(no_sleep):
    calls = []

    def throttled():
        calls.append(1)
        raise client_error("SlowDown", 503)

    with pytest.raises(StorageUnavailable) as info:
        retrying("GET", URI, throttled, RetryPolicy(attempts=4, backoff=1.0, backoff_max=3.0))
    assert len(calls) == 4 and len(no_sleep) == 3 and max(no_sleep) <= 3.0
    e = info.value
    assert not isinstance(e, OSError)  # `except OSError` (a missing file, bad data) never swallows it
    assert str(e).startswith(f"{URI}: GET still failing after 4 attempt(s)") and "SlowDown 503" in str(e)
    assert "run again to resume" in str(e)


def test_a_resumed_read_counts_only_tries_without_progress(no_sleep):
    tries = Attempts("GET", URI, RetryPolicy(attempts=3, backoff=0.01))
    for _ in range(10):  # a body cut short again and again, but each try brings more bytes
        tries.failure(ShortRead("cut"))
        tries.progressed()
    tries.failure(ShortRead("cut"))
    tries.failure(ShortRead("cut"))
    with pytest.raises(StorageUnavailable):
        tries.failure(ShortRead("cut"))
    with pytest.raises(FileNotFoundError, match=URI):
        Attempts("GET", URI).failure(client_error("NoSuchKey", 404))


def test_the_policy_comes_from_the_environment(monkeypatch):
    for k in pol.ENV.values():
        monkeypatch.delenv(k, raising=False)
    assert current_policy() == RetryPolicy()
    assert current_policy().retry_mode == "standard" and current_policy().attempts == 8
    monkeypatch.setenv("LAVIDA_S3_ATTEMPTS", "9")
    monkeypatch.setenv("LAVIDA_S3_RETRY_MODE", "adaptive")
    monkeypatch.setenv("LAVIDA_S3_READ_TIMEOUT", "5")
    p = current_policy()
    assert (p.attempts, p.retry_mode, p.read_timeout) == (9, "adaptive", 5.0)
    monkeypatch.setenv("LAVIDA_S3_RETRY_MODE", "eager")
    with pytest.raises(ValueError, match="retry_mode"):
        current_policy()


def test_the_s3_client_uses_the_policy(monkeypatch, s3_endpoint):
    from lavida_data.io import s3

    monkeypatch.setenv("LAVIDA_S3_RETRY_MODE", "adaptive")
    monkeypatch.setenv("LAVIDA_S3_REQUEST_ATTEMPTS", "4")
    monkeypatch.setenv("LAVIDA_S3_CONNECT_TIMEOUT", "3")
    monkeypatch.setenv("LAVIDA_S3_READ_TIMEOUT", "7")
    cfg = s3.client().meta.config
    assert cfg.retries == {"mode": "adaptive", "total_max_attempts": 4}
    assert (cfg.connect_timeout, cfg.read_timeout) == (3.0, 7.0)
