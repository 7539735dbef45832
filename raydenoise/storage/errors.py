"""Storage failures in words: which errors stop a job (the storage itself failed) and which are one object's, a one-line reason for each, and the last line of a Ray error."""

from __future__ import annotations

import errno

from ..errors import RaydenoiseError


class StorageError(RaydenoiseError):
    """A URI that cannot be listed, read or written; the message names the URI and why."""


# errno values that say the storage as a whole is unusable, not one object.
_STORAGE_WIDE_ERRNO = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EROFS,
    errno.EIO,
    errno.ENOTCONN,
    errno.ESTALE,
}


_NETWORK_HINTS = (
    "could not connect",
    "connection refused",
    "connect timeout",
    "endpoint url",
    "nosuchbucket",
    "no such bucket",
    "cannot connect",
    "connection reset",
    "server disconnected",
    "invalidaccesskeyid",
    "signaturedoesnotmatch",
    "accessdenied",
    "access denied",
    "expiredtoken",
    "read timeout",
    "name or service not known",
)


def storage_wide(exc: BaseException) -> bool:
    """True for a failure of the storage itself (full disk, read-only or vanished file system, S3
    unreachable, bucket gone, credentials rejected) rather than of one object: every further
    object would fail the same way, so a job should stop, report and be resumed later."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _STORAGE_WIDE_ERRNO:
            return True
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return True
        name = type(exc).__name__
        if name in (
            "EndpointConnectionError",
            "ConnectTimeoutError",
            "ReadTimeoutError",
            "ClientConnectorError",
            "ServerDisconnectedError",
            "NoCredentialsError",
            "ConnectionClosedError",
            "NoSuchBucket",
        ):
            return True
        text = str(exc).lower()
        if any(h in text for h in _NETWORK_HINTS):
            return True
        nxt = exc.__cause__ or exc.__context__
        if nxt is None:
            return False
        exc = nxt
    return False


def object_error(exc: BaseException) -> str:
    """A short reason for a failure to read or write one object, for a report row."""
    if isinstance(exc, IsADirectoryError):
        return "is a folder (a symbolic link to a folder is not followed)"
    if isinstance(exc, OSError) and exc.errno == errno.ELOOP:
        return "symbolic link loop"
    if isinstance(exc, FileNotFoundError):
        return "not found (removed while the job ran, or a broken symbolic link)"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return _reason(exc) if str(exc) else type(exc).__name__


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:300]


_RAY_HINTS = (
    "To change retry attempts",
    "Failed to apply UDF",
    "UDF failed to process",
    "The above exception",
)


def last_error_line(exc: BaseException) -> str:
    """One line naming the root cause of a (possibly Ray-wrapped) exception: the innermost cause
    that is not one of Ray's wrappers, as ``Type: first line``; else the last line of the text
    that is not one of Ray's retry hints."""
    inner, seen = exc, set()
    while id(inner) not in seen:
        seen.add(id(inner))
        nxt = getattr(inner, "cause", None) or inner.__cause__
        if not isinstance(nxt, BaseException):
            break
        inner = nxt
    if inner is not exc and not type(inner).__module__.startswith("ray"):
        text = str(inner).strip().splitlines()
        return f"{type(inner).__name__}: {text[0][:400]}" if text else type(inner).__name__
    lines = [
        ln for ln in str(exc).splitlines() if ln.strip() and not ln.lstrip().startswith(_RAY_HINTS)
    ]
    return lines[-1][:500] if lines else type(exc).__name__
