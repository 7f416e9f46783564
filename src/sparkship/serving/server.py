"""The REST server: FastAPI + uvicorn around a JVM-free scorer.

Endpoints: ``POST /predict`` (one record, or a list of records), ``GET /health``, ``GET /metadata``; the OpenAPI
page is at ``/docs``. A record that does not fit the model's signature, or that the pipeline refuses, answers 422
naming the field; a body over ``max_body_bytes`` or over ``max_rows`` records answers 413. Bodies are parsed and
scored in a pool of threads, one per core, so the event loop keeps answering ``/health`` meanwhile (a body of a
record or a few is scored on the loop: the hop to a thread would cost more). Each request has an id
(``X-Request-ID``, taken or made up, see :mod:`sparkship.serving.requests`) on its log lines and in its response.
With a ``NAME@ALIAS`` reference the server follows the alias; with a token every path but ``/health`` needs
``Authorization: Bearer <token>``. Details: docs/DESIGN.md.

    >>> app = create_app(ModelHolder(resolve("churn@champion", settings)))       # doctest: +SKIP
    >>> serve("churn@champion", settings, host="127.0.0.1", port=8080)           # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import contextvars
import gc
import hmac
import ipaddress
import json
import logging
import math
import os
import re
import sys
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from sparkship import killpoints
from sparkship.config import Settings
from sparkship.errors import UsageError
from sparkship.registry import Registry
from sparkship.serving.batch import from_records
from sparkship.serving.pipeline import ScoreResult
from sparkship.serving.requests import REQUEST_ID, RequestIdMiddleware
from sparkship.serving.signature import FLOATING, InvalidRecordError
from sparkship.serving.source import ServedModel, load_version, resolve_source

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 1 << 20  # 1 MiB
# Records per POST /predict: about as many records of five or six fields as the default 1 MiB body holds, and few
# enough that one request keeps a scoring thread for a fraction of a second. Bigger batches are cheaper through
# `sparkship predict` or `score`, which read columns rather than one JSON object per record.
DEFAULT_MAX_ROWS = 10_000
BATCH_PATH_MIN_ROWS = 256  # below this the single-record path is faster than building numpy columns
# Predictions per json.dumps call: one call holds the GIL from start to end (8,000 rows: tens of milliseconds), and
# the event loop, answering /health, waits for it.
ENCODE_ROWS = 256
# A body this small (a record or a few) is scored on the event loop: handing it to a thread and back costs more
# than scoring it, and it does not wait behind big requests for a thread.
INLINE_MAX_BODY = 2 << 10
# Bodies above this many bytes are parsed in pieces of about this many characters: like json.dumps, one
# json.loads call holds the GIL from start to end, several milliseconds for a body of 8,000 records.
PARSE_PIECE_CHARS = 64 << 10
# How long a thread may keep the GIL while another waits for it (CPython's default: 5 ms). The event loop waits
# that long, often more than once, for each step of a /health request while the pool scores.
SWITCH_INTERVAL_S = 0.0005
TOKEN_ENV = "SPARKSHIP_SERVE_TOKEN"
OPEN_PATHS = frozenset({"/health"})  # liveness probes carry no credentials


# --- access ----------------------------------------------------------------------------------------------------


def read_token(token_file: str | None, environ: os._Environ[str] | dict[str, str] | None = None) -> str | None:
    """The bearer token: the first line of ``token_file`` if given, else ``$SPARKSHIP_SERVE_TOKEN``, else None.

    >>> read_token(None, {"SPARKSHIP_SERVE_TOKEN": "s3cret"})
    's3cret'
    >>> read_token(None, {}) is None
    True
    """
    environ = os.environ if environ is None else environ
    if token_file is not None:
        try:
            with open(token_file, encoding="utf-8") as fh:
                token = fh.readline().strip()
        except OSError as exc:
            raise UsageError(f"--token-file {token_file}: cannot read it ({exc.strerror})") from None
        if not token:
            raise UsageError(f"--token-file {token_file} is empty: write the token on its first line")
        return token
    token = environ.get(TOKEN_ENV, "").strip()
    return token or None


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine.

    >>> [is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "10.1.2.3", "example.com")]
    [True, True, True, False, False, False]
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name may resolve to anything


def check_exposure(host: str, token: str | None, allow_unauthenticated: bool) -> None:
    """Refuse to serve a reachable address without a token unless the caller said so; warn when it did."""
    if token is not None or is_loopback(host):
        return
    if not allow_unauthenticated:
        raise UsageError(
            f"--host {host} can be reached from other machines and no token is set: pass --token-file FILE "
            f"(or set {TOKEN_ENV}) so clients must send 'Authorization: Bearer <token>', or pass "
            "--allow-unauthenticated to serve without one"
        )
    log.warning("serving on %s WITHOUT a token (--allow-unauthenticated): anyone who can reach it can score "
                "and read the model's metadata", host)


class BearerTokenGate:
    """ASGI middleware: every path but :data:`OPEN_PATHS` needs ``Authorization: Bearer <token>``.

    A plain ASGI class rather than ``BaseHTTPMiddleware``: it adds no task or stream copy per request.
    """

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.token = token.encode("utf-8")

    def _authorised(self, headers: list[tuple[bytes, bytes]]) -> bool:
        given = b""
        for key, value in headers:
            if key == b"authorization":
                given = value
        scheme, _, credentials = given.partition(b" ")
        # compare_digest: the time taken does not tell how much of a guess was right.
        return hmac.compare_digest(credentials.strip(), self.token) and scheme.lower() == b"bearer"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self._authorised(scope["headers"]):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"detail": [{"msg": "missing or wrong bearer token (Authorization: Bearer <token>)"}]})
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"), (b"www-authenticate", b'Bearer realm="sparkship"'),
            (b"content-length", str(len(body)).encode()),
        ]})
        await send({"type": "http.response.body", "body": body.encode()})


class ModelHolder:
    """The model being served. Readers take ``holder.current`` once per request; a swap replaces that one
    reference (atomic in CPython), so a request never mixes two models."""

    def __init__(self, served: ServedModel) -> None:
        self.current = served
        self.swaps = 0

    def swap(self, served: ServedModel) -> None:
        previous = self.current
        self.current = served
        self.swaps += 1
        log.info("now serving %s version %s (was %s)", served.name, served.version, previous.version)


class AliasFollower:
    """Polls the registry for ``name@alias`` and swaps in the version it points at."""

    def __init__(self, holder: ModelHolder, settings: Settings, poll_seconds: float) -> None:
        self.holder = holder
        self.settings = settings
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sparkship-alias-follower", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def check_once(self) -> bool:
        """Look at the alias once; load and swap if it moved. True if a swap happened."""
        cur = self.holder.current
        assert cur.alias is not None
        version = Registry(self.settings).alias_version(cur.name, cur.alias)
        if version is None or version == cur.version:
            return False
        log.info("%s@%s moved to version %s: loading it", cur.name, cur.alias, version)
        fresh = load_version(self.settings, cur.name, version, cur.alias, cur.ref)  # fully loaded first
        self.holder.swap(fresh)
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.check_once()
            except Exception as exc:  # keep serving the current model; try again at the next poll
                log.warning("could not follow %s: %s", self.holder.current.ref, exc)


def _clean(value: Any) -> Any:
    """NaN and infinities are not JSON: send null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _error(status: int, message: str, field: str | None = None, row: int | None = None) -> JSONResponse:
    detail: dict[str, Any] = {"msg": message}
    if field is not None:
        detail["field"] = field
        detail["loc"] = ["body"] + ([row] if row is not None else []) + [field]
    if row is not None:
        detail["row"] = row
    return JSONResponse({"detail": [detail]}, status_code=status)


def _check_finite(served: ServedModel, record: dict[str, Any], row: int | None) -> None:
    types = served.scorer.signature.types
    for name, value in record.items():
        if isinstance(value, float) and not math.isfinite(value) and types[name] in FLOATING:
            # NaN is a missing value some stages take (Imputer, 'keep'/'skip' modes); the scorer refuses it
            # where Spark would. Infinities are never accepted over HTTP.
            if value != value:
                continue
            raise InvalidRecordError(name, "must be a finite number", row)


def _score_records(served: ServedModel, payload: Any) -> list[dict[str, Any]]:
    single = isinstance(payload, dict)
    records = [payload] if single else payload
    if not isinstance(records, list) or not records:
        raise InvalidRecordError("<body>", "send one record (a JSON object) or a non-empty list of records")
    scorer = served.scorer
    coerced = []
    for i, rec in enumerate(records):
        row = None if single else i
        if not isinstance(rec, dict):
            raise InvalidRecordError("<record>", "a record must be a JSON object", row)
        c = scorer.signature.coerce_record(rec, row)
        _check_finite(served, c, row)
        coerced.append(c)
    out: list[dict[str, Any]] = []
    if len(coerced) < BATCH_PATH_MIN_ROWS:
        for i, c in enumerate(coerced):
            try:
                scored = scorer.score_one(c, checked=True)
            except InvalidRecordError as exc:
                raise InvalidRecordError(exc.field, exc.reason, None if single else i) from None
            if scored is None:
                out.append({"dropped": True, "dropped_by": scorer.dropped_by_one(c)})
            else:
                out.append({k: _clean(v) for k, v in scored.items()})
        return out
    return _batch_predictions(scorer.score(from_records(coerced, scorer.signature)))


def _batch_predictions(result: ScoreResult) -> list[dict[str, Any]]:
    # Only a float column can hold NaN or an infinity (or an object column, anything): _clean walks those alone.
    dirty = {k for k, v in result.columns.items()
             if v.dtype.kind == "O" or (v.dtype.kind == "f" and not np.isfinite(v).all())}
    out: list[dict[str, Any]] = []
    for i, rec in enumerate(result.records()):
        if rec is None:
            out.append({"dropped": True, "dropped_by": result.dropped_by.get(i)})
        elif dirty:
            out.append({k: _clean(v) if k in dirty else v for k, v in rec.items()})
        else:
            out.append(rec)
    return out


def _encode(served: ServedModel, predictions: list[dict[str, Any]]) -> bytes:
    """The response body, the text ``json.dumps`` writes for it, encoded :data:`ENCODE_ROWS` predictions a call."""
    head = json.dumps({"model": served.name, "version": served.version, "predictions": []})
    chunks = [json.dumps(predictions[i:i + ENCODE_ROWS])[1:-1] for i in range(0, len(predictions), ENCODE_ROWS)]
    return (head[:-2] + ", ".join(chunks) + "]}").encode()


def scoring_threads() -> int:
    """The cores this process may run on: the scoring pool's default size."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


async def _read_body(request: Request, max_body_bytes: int) -> bytes | Response:
    """The whole body, or a 413 as soon as it is over ``max_body_bytes`` (declared or read)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > max_body_bytes:
        return _error(413, f"request body is over the {max_body_bytes} byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body_bytes:
            return _error(413, f"request body is over the {max_body_bytes} byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


_SPACE = re.compile(r"[ \t\n\r]*")


def _parse(body: bytes) -> Any:
    """``json.loads(body)``; a large list is parsed about :data:`PARSE_PIECE_CHARS` at a time, so that the GIL can
    change hands in between (one json.loads call holds it from start to end)."""
    if len(body) <= PARSE_PIECE_CHARS:
        return json.loads(body)
    text = body.decode(json.detect_encoding(body), "surrogatepass")  # as json.loads decodes bytes
    items = _parse_in_pieces(text, PARSE_PIECE_CHARS)
    return json.loads(text) if items is None else items  # None: json.loads parses it, or names what is wrong


def _space_end(text: str, pos: int) -> int:
    """The position after the whitespace at ``text[pos:]`` (``_SPACE`` matches the empty string too)."""
    m = _SPACE.match(text, pos)
    return m.end() if m is not None else pos


def _parse_in_pieces(text: str, piece_chars: int) -> list[Any] | None:
    """The list ``text`` holds, parsed in pieces of at most ``piece_chars`` that each end at a ``}`` followed by
    ``,`` (the last: at the end); None where that fails.

    A piece is parsed as ``[`` + piece + ``]``. It parses only if it is a run of whole elements: one that ends
    inside a string leaves the string open, one that ends inside an element leaves that element open. So a cut in
    the wrong place is never taken for a right one; then (and for anything but a list) the caller parses at once.
    """
    start = _space_end(text, 0)
    if not text.startswith("[", start):
        return None
    items: list[Any] = []
    start += 1
    while len(text) - start > piece_chars:
        cut = text.rfind("}", start, start + piece_chars)
        comma = _space_end(text, cut + 1)
        if cut < 0 or not text.startswith(",", comma):
            return None
        try:
            items.extend(json.loads("[" + text[start:cut + 1] + "]"))
        except (ValueError, RecursionError):
            return None
        start = comma + 1
    try:
        rest = json.loads("[" + text[start:])
    except (ValueError, RecursionError):
        return None
    if items and not rest:  # "[..., ]": a comma with no element after it
        return None
    parsed: list[Any] | None = items + rest if items else rest
    return parsed


def _answer(served: ServedModel, body: bytes, max_rows: int, pause_point: str | None = None) -> Response:
    """Parse, check and score one request body; the response to send. ``pause_point``: the kill point to pass
    (:mod:`sparkship.killpoints`) once the body is parsed and checked, where a test can hold a request."""
    try:
        payload = _parse(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        log.info("422: body is not valid JSON")
        return _error(422, f"body is not valid JSON: {exc}")
    rows = len(payload) if isinstance(payload, list) else 1
    if rows > max_rows:
        log.info("413: %d records, over the limit of %d", rows, max_rows)
        return _error(413, f"{rows} records is over the limit of {max_rows} records per request (sparkship serve "
                           f"--max-rows {max_rows}): send at most {max_rows} per request, or score a file with "
                           "`sparkship predict`")
    log.debug("scoring %d records with %s version %s", rows, served.name, served.version)
    if pause_point is not None:
        killpoints.reached(pause_point)
    started = time.perf_counter()
    try:
        predictions = _score_records(served, payload)
    except InvalidRecordError as exc:
        log.info("422: field '%s': %s%s", exc.field, exc.reason, "" if exc.row is None else f" (row {exc.row})")
        return _error(422, f"field '{exc.field}': {exc.reason}", exc.field, exc.row)
    except Exception:  # a bug or a broken model: one 500 naming the request id, the traceback in the log
        log.exception("scoring %d records failed", rows)
        return _error(500, f"scoring failed (request {REQUEST_ID.get()}): see the server's log")
    log.debug("scored %d records in %.1f ms", rows, (time.perf_counter() - started) * 1e3)
    return Response(_encode(served, predictions), media_type="application/json")


def _lifespan(follower: AliasFollower | None, pool: ThreadPoolExecutor) -> Any:
    """The app's start and stop: the alias follower runs while the app does; the scoring pool ends with it."""

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        if follower is not None:
            follower.start()
        yield
        if follower is not None:
            follower.stop()
        pool.shutdown(wait=False, cancel_futures=True)

    return lifespan


def create_app(holder: ModelHolder, *, max_body_bytes: int = DEFAULT_MAX_BODY, max_rows: int = DEFAULT_MAX_ROWS,
               threads: int | None = None, follower: AliasFollower | None = None,
               token: str | None = None) -> FastAPI:
    """The FastAPI application serving ``holder.current``; with ``token``, behind :class:`BearerTokenGate`.

    Args:
        max_body_bytes: larger bodies answer 413.
        max_rows: a list of more records answers 413 naming the limit.
        threads: size of the pool that parses and scores ``/predict`` bodies, off the event loop, so ``/health``
            and other requests are answered meanwhile (default: :func:`scoring_threads`).
    """
    if max_rows < 1:
        raise UsageError(f"max_rows {max_rows}: allow at least one record per request")
    pool = ThreadPoolExecutor(max_workers=threads or scoring_threads(), thread_name_prefix="sparkship-score")
    first = holder.current
    app = FastAPI(
        title=f"sparkship: {first.name}",
        description="JVM-free scoring of a Spark MLlib PipelineModel (outputs match Spark's transform()).",
        lifespan=_lifespan(follower, pool),
    )
    record_schema = first.scorer.signature.json_schema()
    body_schema = {"oneOf": [record_schema, {"type": "array", "items": record_schema, "minItems": 1}]}

    @app.post(
        "/predict",
        summary="Score one record or a list of records",
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": body_schema}}}},
        responses={413: {"description": f"body too large, or more than {max_rows} records"},
                   422: {"description": "invalid record"}},
    )
    async def predict(request: Request) -> Response:
        body = await _read_body(request, max_body_bytes)
        if isinstance(body, Response):
            return body
        served = holder.current  # one model for the whole request, even if a swap happens meanwhile
        if len(body) <= INLINE_MAX_BODY:
            return _answer(served, body, max_rows)
        # The request's context goes with it into the pool thread: its log lines keep the request id.
        work = contextvars.copy_context().run
        return await asyncio.get_running_loop().run_in_executor(pool, work, _answer, served, body, max_rows,
                                                                "serve:scoring")

    @app.get("/health", summary="Liveness and the model being served")
    async def health() -> dict[str, Any]:
        cur = holder.current
        return {"status": "ok", "model": cur.name, "version": cur.version}

    @app.get("/metadata", summary="Model name, version, signature and stages")
    async def metadata() -> dict[str, Any]:
        return {**holder.current.info(), "swaps": holder.swaps}

    if token is not None:
        app.add_middleware(BearerTokenGate, token=token)
    app.add_middleware(RequestIdMiddleware)  # added last, so outermost: a 401 carries an id too
    return app


def build(ref: str | None, settings: Settings, *, path: str | None = None, poll_seconds: float = 5.0,
          max_body_bytes: int = DEFAULT_MAX_BODY, max_rows: int = DEFAULT_MAX_ROWS, threads: int | None = None,
          token: str | None = None) -> tuple[Any, ModelHolder]:
    """Load the registered model ``ref`` (following the alias when it is ``NAME@ALIAS``) or the model folder
    ``path`` (exactly one of them), and build the app (the other arguments: :func:`create_app`'s)."""
    holder = ModelHolder(resolve_source(settings, model=ref, path=path))
    follower = AliasFollower(holder, settings, poll_seconds) if holder.current.alias else None
    app = create_app(holder, max_body_bytes=max_body_bytes, max_rows=max_rows, threads=threads, follower=follower,
                     token=token)
    return app, holder


def serve(ref: str | None, settings: Settings, *, path: str | None = None, host: str = "127.0.0.1",
          port: int = 8080, poll_seconds: float = 5.0, max_body_bytes: int = DEFAULT_MAX_BODY,
          max_rows: int = DEFAULT_MAX_ROWS, threads: int | None = None, token: str | None = None,
          allow_unauthenticated: bool = False) -> None:
    """Run the server in the foreground until interrupted (see :func:`check_exposure` for ``host``; the limits and
    ``threads``: :func:`create_app`)."""
    check_exposure(host, token, allow_unauthenticated)  # before the model is loaded: fail fast
    if max_rows < 1:
        raise UsageError(f"--max-rows {max_rows}: allow at least one record per request")
    app, holder = build(ref, settings, path=path, poll_seconds=poll_seconds, max_body_bytes=max_body_bytes,
                        max_rows=max_rows, threads=threads, token=token)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    # What is loaded now (modules, the model) lives as long as the server: frozen, the collector no longer walks it.
    # Unfrozen, a full collection during a big request walks it all, holding the GIL for tens of milliseconds.
    gc.collect()
    gc.freeze()
    log.info("serving %s version %s on http://%s:%d (docs at /docs%s; at most %d records per request, scored on "
             "%d threads)", holder.current.name, holder.current.version, host, port,
             "; bearer token required" if token else "", max_rows, threads or scoring_threads())
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
