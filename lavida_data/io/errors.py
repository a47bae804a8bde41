"""What a storage fault means: transient (retried), or permanent (raised at once, naming the object).

* **Transient**: throttling (``503 SlowDown``, 429, ``Throttling``...), other 5xx, S3's
  ``RequestTimeout`` / ``IncompleteBody`` answers, dropped or reset connections, connect and read
  timeouts, and a body shorter (or longer) than its ``Content-Length`` (:class:`ShortRead`).
  They are retried by :func:`lavida_data.io.policy.retrying`; one that outlasts the policy is
  raised as :class:`StorageUnavailable`, which is *not* an ``OSError``: code that treats a
  missing or unreadable file as bad data (and counts it) never sees a transient fault.
* **Permanent**: a missing object or bucket (``FileNotFoundError``), denied access
  (``PermissionError``), any other refusal (``StorageError``, an ``OSError``), an object that
  changed while it was read (``ObjectChanged``). Messages name the object, never credentials.
"""

from __future__ import annotations

import http.client
import socket

from lavida_data.errors import LavidaDataError

MISSING = frozenset({"404", "NoSuchKey", "NoSuchBucket", "NotFound"})
DENIED = frozenset({"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled",
                    "ExpiredToken", "InvalidToken", "AccountProblem"})
TRANSIENT_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
    "RequestThrottledException", "TooManyRequestsException", "RequestLimitExceeded", "BandwidthLimitExceeded",
    "EC2ThrottledException", "ProvisionedThroughputExceededException", "RequestTimeout", "RequestTimeoutException",
    "PriorRequestNotComplete", "InternalError", "ServiceUnavailable", "IncompleteBody", "OperationAborted",
})


class StorageError(OSError):
    """A permanent refusal by the store other than a missing object or denied access."""


class ObjectChanged(StorageError):
    """The object was replaced while it was being read (its ETag changed between two requests)."""


class StorageUnavailable(LavidaDataError):
    """A transient fault that lasted beyond the retry policy: nothing was read or written as data.

    Running the command again resumes (every writer here is idempotent)."""

    def __init__(self, uri: str, op: str, attempts: int, seconds: float, cause: BaseException):
        self.uri, self.op, self.attempts, self.cause = uri, op, attempts, cause
        super().__init__(f"{uri}: {op} still failing after {attempts} attempt(s) over {seconds:.1f}s "
                         f"({describe(cause)}); the store is throttling or unreachable: run again to resume")


class ShortRead(Exception):
    """A body whose length differs from its ``Content-Length`` (a truncated answer)."""


def error_code(e: BaseException) -> tuple[str, int | None]:
    """The S3 error code and HTTP status of a ``ClientError`` (``("", None)`` otherwise)."""
    response = getattr(e, "response", None)
    if not isinstance(response, dict):
        return "", None
    code = str(response.get("Error", {}).get("Code", "") or "")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code, status


def describe(e: BaseException) -> str:
    code, status = error_code(e)
    if code or status:
        return f"{code or 'HTTP'} {status or ''}".strip()
    text = str(e).split("\n")[0][:200]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


_WRAPPERS = ("S3UploadFailedError", "S3TransferFailedError", "RetriesExceededError")


def _unwrap(e: BaseException) -> BaseException:
    """The fault inside boto3's transfer wrappers (they keep only its text)."""
    while type(e).__name__ in _WRAPPERS:
        inner = getattr(e, "last_exception", None) or e.__cause__ or e.__context__
        if inner is None:
            break
        e = inner
    return e


def is_transient(e: BaseException) -> bool:
    """Whether ``e`` is a fault that another try may not meet (see the module doc)."""
    e = _unwrap(e)
    if isinstance(e, ShortRead):
        return True
    if isinstance(e, (StorageUnavailable, StorageError, FileNotFoundError, PermissionError)):
        return False
    code, status = error_code(e)
    if code or status:
        if code in MISSING or code in DENIED:
            return False
        return code in TRANSIENT_CODES or status in (429, 500, 502, 503, 504) or (status or 0) >= 500
    if isinstance(e, (ConnectionError, TimeoutError, socket.timeout, http.client.HTTPException)):
        return True
    try:
        import urllib3.exceptions as u3
        from botocore import exceptions as bx
        from botocore.parsers import ResponseParserError
    except ImportError:  # pragma: no cover - boto3 is a dependency
        return False
    transient = (bx.HTTPClientError, bx.ConnectionError, bx.IncompleteReadError, bx.ChecksumError,
                 ResponseParserError, u3.HTTPError)
    flexible = getattr(bx, "FlexibleChecksumError", None)
    if flexible is not None:
        transient = (*transient, flexible)
    return isinstance(e, transient)


def translate(e: BaseException, uri: str) -> BaseException:
    """A permanent fault as the exception this layer raises: it names the object."""
    if isinstance(e, (StorageUnavailable, StorageError)):
        return e
    e = _unwrap(e)
    code, status = error_code(e)
    if code == "NoSuchUpload":
        return StorageError(f"{uri}: the multipart upload is gone (NoSuchUpload)")
    if code in MISSING or status == 404:
        return FileNotFoundError(f"{uri}: no such object")
    if code in DENIED or status == 403:
        return PermissionError(f"{uri}: access denied ({code or status})")
    if code == "PreconditionFailed" or status == 412:
        return ObjectChanged(f"{uri}: the object changed while it was being read")
    if code or status:
        return StorageError(f"{uri}: S3 error {code or status}")
    try:
        from botocore.exceptions import BotoCoreError, NoCredentialsError
    except ImportError:  # pragma: no cover
        return e
    if isinstance(e, NoCredentialsError):
        return PermissionError(f"{uri}: no S3 credentials found")
    if isinstance(e, BotoCoreError):
        return StorageError(f"{uri}: {type(e).__name__}: {e}")
    return e  # not a storage fault (a bug, an interruption): as it is
