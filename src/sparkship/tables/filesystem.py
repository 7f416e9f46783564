"""Whether a filesystem takes delta-rs' commits: FUSE mounts (Unity Catalog volumes) refuse its hard links."""
from __future__ import annotations

import contextlib
import errno
import os
import uuid

from sparkship.tables.engine import UnsupportedFilesystemError


def check_commit_support(table: str) -> None:
    """Fail at once, naming the operation and the mount, where delta-rs cannot commit.

    delta-rs commits on a local filesystem by hard-linking a temporary file to the next log entry (a
    no-replace rename). FUSE mounts such as Unity Catalog volumes refuse that with ENOSYS ("Function not
    implemented", os error 38): every commit would fail, so no data is written and nothing is retried.
    """
    folder = _existing_parent(table)
    if folder in _COMMIT_SUPPORT_CHECKED:
        return
    probe = os.path.join(folder, f".sparkship-link-probe-{uuid.uuid4().hex}")
    try:
        with open(probe, "w"):
            pass
        try:
            os.link(probe, probe + ".link")
            os.remove(probe + ".link")
        except OSError as exc:
            if exc.errno in (errno.ENOSYS, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise unsupported_filesystem(table, "hard link (no-replace rename)", exc) from None
            raise
    finally:
        with contextlib.suppress(OSError):
            os.remove(probe)
    _COMMIT_SUPPORT_CHECKED.add(folder)


_COMMIT_SUPPORT_CHECKED: set[str] = set()


def _existing_parent(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.isdir(path):
        path = os.path.dirname(path)
    return path


def _mount_point(path: str) -> str:
    path = _existing_parent(path)
    while not os.path.ismount(path):
        path = os.path.dirname(path)
    return path


def unsupported_filesystem(table: str, operation: str, exc: BaseException) -> UnsupportedFilesystemError:
    return UnsupportedFilesystemError(
        f"cannot commit to {table} with the deltars engine: the filesystem mounted at {_mount_point(table)} "
        f"refuses {operation} ({exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}), which "
        "delta-rs needs for every commit. Use the native engine (SPARKSHIP_DELTA_ENGINE=native with Delta's jars; "
        "on Databricks it is the default), or put the table on a local disk."
    )


def is_unsupported_operation(exc: BaseException) -> bool:
    text = str(exc)
    return "os error 38" in text or "Function not implemented" in text or "Operation not supported" in text
