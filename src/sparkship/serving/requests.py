"""Per-request ids for the REST server: taken from ``X-Request-ID`` or made up, echoed, and put on every log line.

:class:`RequestIdMiddleware` (plain ASGI, outermost) sets :data:`REQUEST_ID` for the life of a request and adds the
``X-Request-ID`` response header, also to a 401 or a 413. :func:`install_log_records` makes every log record created
while a request runs, by any logger and in any thread the request's context was copied to, carry
``record.request_id`` and start its message with ``[request ID]``: whatever the handlers' format, the line names
the request. Records created outside a request get ``request_id = "-"`` and are left as they are.

    >>> [valid_request_id(v) for v in ("3f2a-77:retry.1", "Root=1-5759e988;Sampled=1", "x\\n[request y] z", "%s", "")]
    [True, True, False, False, False]
"""
from __future__ import annotations

import contextvars
import logging
import re
import threading
import time
import uuid
from typing import Any

log = logging.getLogger(__name__)

HEADER = b"x-request-id"
# An id from a client goes into log lines verbatim: letters, digits and a few separators only (no space, newline,
# bracket or '%', which a log format would read), so that it can neither forge a line nor break one; anything else
# is replaced by an id of our own.
_VALID = re.compile(r"[A-Za-z0-9._:;,/+=@~-]{1,128}")
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("sparkship_request_id", default=None)

_installed = False
_install_lock = threading.Lock()


def valid_request_id(value: str) -> bool:
    """True when ``value`` may be used as it is: 1 to 128 letters, digits or ``. _ : ; , / + = @ ~ -``."""
    return _VALID.fullmatch(value) is not None


def new_request_id() -> str:
    return uuid.uuid4().hex


def install_log_records() -> None:
    """Wrap the process's log record factory (once) so records made during a request name it.

    A record factory rather than a filter on some handlers: it reaches every logger (uvicorn's own included) and
    every handler, also those added after the server started.
    """
    global _installed
    with _install_lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            request_id = REQUEST_ID.get()
            if request_id is None:
                record.request_id = "-"
            else:
                record.request_id = request_id
                record.msg = f"[request {request_id}] {record.msg}"
            return record

        logging.setLogRecordFactory(factory)
        _installed = True


class RequestIdMiddleware:
    """ASGI middleware: one id per HTTP request in :data:`REQUEST_ID`, echoed as ``X-Request-ID``; at DEBUG one
    line per request (method, path, status, milliseconds), as an access log that is off by default."""

    def __init__(self, app: Any) -> None:
        self.app = app
        install_log_records()

    @staticmethod
    def _incoming(headers: list[tuple[bytes, bytes]]) -> str | None:
        for key, value in headers:
            if key == HEADER:
                text = value.decode("latin-1")
                return text if valid_request_id(text) else None
        return None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = self._incoming(scope["headers"]) or new_request_id()
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status = [0]

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", []), (HEADER, request_id.encode("ascii"))]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log.debug("%s %s %d in %.1f ms", scope["method"], scope["path"], status[0],
                      (time.perf_counter() - started) * 1e3)
            REQUEST_ID.reset(token)
