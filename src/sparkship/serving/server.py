"""The REST server: FastAPI + uvicorn around a JVM-free scorer.

Endpoints: ``POST /predict`` (one record, or a list of records), ``GET /health``, ``GET /metadata``; the OpenAPI
page is at ``/docs``. Records are checked against the model's signature: a missing field, a value of the wrong
type, a non-finite number where the pipeline does not take one, or a value the pipeline refuses (as Spark's
``transform()`` would) answers 422 naming the field; a body over ``max_body_bytes`` answers 413.

With a ``NAME@ALIAS`` reference the server polls the registry every ``poll_seconds`` and, when the alias moves,
loads the new version completely before swapping one reference, so no request fails or sees half a model.

With a token (``--token-file`` or ``SPARKSHIP_SERVE_TOKEN``) every path but ``/health`` needs the header
``Authorization: Bearer <token>`` (401 otherwise; compared in constant time). Binding an address other machines
can reach without a token needs ``allow_unauthenticated=True`` and logs a warning.

    >>> app = create_app(ModelHolder(resolve("churn@champion", settings)))       # doctest: +SKIP
    >>> serve("churn@champion", settings, host="127.0.0.1", port=8080)           # doctest: +SKIP
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import math
import os
import threading
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from sparkship.config import Settings
from sparkship.errors import UsageError
from sparkship.serving.batch import from_records
from sparkship.serving.signature import FLOATING, InvalidRecordError
from sparkship.serving.source import ServedModel, load_version, resolve_source

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 1 << 20  # 1 MiB
BATCH_PATH_MIN_ROWS = 256  # below this the single-record path is faster than building numpy columns
TOKEN_ENV = "SPARKSHIP_SERVE_TOKEN"
OPEN_PATHS = frozenset({"/health"})  # liveness probes carry no credentials


# --- access ----------------------------------------------------------------------------------------------------


def read_token(token_file: str | None, environ: "os._Environ[str] | dict[str, str] | None" = None) -> str | None:
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
        from sparkship.registry import Registry

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
    result = scorer.score(from_records(coerced, scorer.signature))
    for i, rec in enumerate(result.records()):
        if rec is None:
            out.append({"dropped": True, "dropped_by": result.dropped_by.get(i)})
        else:
            out.append({k: _clean(v) for k, v in rec.items()})
    return out


def create_app(holder: ModelHolder, *, max_body_bytes: int = DEFAULT_MAX_BODY,
               follower: AliasFollower | None = None, token: str | None = None) -> FastAPI:
    """The FastAPI application serving ``holder.current``; with ``token``, behind :class:`BearerTokenGate`."""

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        if follower is not None:
            follower.start()
        yield
        if follower is not None:
            follower.stop()

    first = holder.current
    app = FastAPI(
        title=f"sparkship: {first.name}",
        description="JVM-free scoring of a Spark MLlib PipelineModel (outputs match Spark's transform()).",
        lifespan=lifespan,
    )
    record_schema = first.scorer.signature.json_schema()
    body_schema = {"oneOf": [record_schema, {"type": "array", "items": record_schema, "minItems": 1}]}

    @app.post(
        "/predict",
        summary="Score one record or a list of records",
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": body_schema}}}},
        responses={413: {"description": "body too large"}, 422: {"description": "invalid record"}},
    )
    async def predict(request: Request) -> Response:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            return _error(413, f"request body is over the {max_body_bytes} byte limit")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                return _error(413, f"request body is over the {max_body_bytes} byte limit")
            chunks.append(chunk)
        try:
            payload = json.loads(b"".join(chunks))
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
            return _error(422, f"body is not valid JSON: {exc}")
        served = holder.current  # one model for the whole request, even if a swap happens meanwhile
        try:
            predictions = _score_records(served, payload)
        except InvalidRecordError as exc:
            return _error(422, f"field '{exc.field}': {exc.reason}", exc.field, exc.row)
        body = {"model": served.name, "version": served.version, "predictions": predictions}
        return Response(json.dumps(body), media_type="application/json")

    @app.get("/health", summary="Liveness and the model being served")
    async def health() -> dict[str, Any]:
        cur = holder.current
        return {"status": "ok", "model": cur.name, "version": cur.version}

    @app.get("/metadata", summary="Model name, version, signature and stages")
    async def metadata() -> dict[str, Any]:
        return {**holder.current.info(), "swaps": holder.swaps}

    if token is not None:
        app.add_middleware(BearerTokenGate, token=token)
    return app


def build(ref: str | None, settings: Settings, *, path: str | None = None, poll_seconds: float = 5.0,
          max_body_bytes: int = DEFAULT_MAX_BODY, token: str | None = None) -> tuple[Any, ModelHolder]:
    """Load the registered model ``ref`` (following the alias when it is ``NAME@ALIAS``) or the model folder
    ``path`` (exactly one of them), and build the app."""
    holder = ModelHolder(resolve_source(settings, model=ref, path=path))
    follower = AliasFollower(holder, settings, poll_seconds) if holder.current.alias else None
    return create_app(holder, max_body_bytes=max_body_bytes, follower=follower, token=token), holder


def serve(ref: str | None, settings: Settings, *, path: str | None = None, host: str = "127.0.0.1",
          port: int = 8080, poll_seconds: float = 5.0, max_body_bytes: int = DEFAULT_MAX_BODY,
          token: str | None = None, allow_unauthenticated: bool = False) -> None:
    """Run the server in the foreground until interrupted (see :func:`check_exposure` for ``host``)."""
    import uvicorn

    check_exposure(host, token, allow_unauthenticated)  # before the model is loaded: fail fast
    app, holder = build(ref, settings, path=path, poll_seconds=poll_seconds, max_body_bytes=max_body_bytes,
                        token=token)
    log.info("serving %s version %s on http://%s:%d (docs at /docs%s)", holder.current.name,
             holder.current.version, host, port, "; bearer token required" if token else "")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
