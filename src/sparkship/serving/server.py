"""The REST server: FastAPI + uvicorn around a JVM-free scorer.

Endpoints: ``POST /predict`` (one record, or a list of records), ``GET /health``, ``GET /metadata``; the OpenAPI
page is at ``/docs``. Records are checked against the model's signature: a missing field, a value of the wrong
type, a non-finite number where the pipeline does not take one, or a value the pipeline refuses (as Spark's
``transform()`` would) answers 422 naming the field; a body over ``max_body_bytes`` answers 413.

With a ``NAME@ALIAS`` reference the server polls the registry every ``poll_seconds`` and, when the alias moves,
loads the new version completely before swapping one reference, so no request fails or sees half a model.

    >>> app = create_app(ModelHolder(resolve("churn@champion", settings)))       # doctest: +SKIP
    >>> serve("churn@champion", settings, host="127.0.0.1", port=8080)           # doctest: +SKIP
"""
from __future__ import annotations

import json
import logging
import math
import threading
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from sparkship.config import Settings
from sparkship.serving.batch import from_records
from sparkship.serving.signature import FLOATING, InvalidRecordError
from sparkship.serving.source import ServedModel, load_version, resolve

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 1 << 20  # 1 MiB
BATCH_PATH_MIN_ROWS = 256  # below this the single-record path is faster than building numpy columns


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
               follower: AliasFollower | None = None) -> FastAPI:
    """The FastAPI application serving ``holder.current``."""

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

    return app


def build(ref: str, settings: Settings, *, poll_seconds: float = 5.0,
          max_body_bytes: int = DEFAULT_MAX_BODY) -> tuple[Any, ModelHolder]:
    """Resolve ``ref``, load it, and build the app (following the alias when ``ref`` is ``NAME@ALIAS``)."""
    holder = ModelHolder(resolve(ref, settings))
    follower = AliasFollower(holder, settings, poll_seconds) if holder.current.alias else None
    return create_app(holder, max_body_bytes=max_body_bytes, follower=follower), holder


def serve(ref: str, settings: Settings, *, host: str = "127.0.0.1", port: int = 8080, poll_seconds: float = 5.0,
          max_body_bytes: int = DEFAULT_MAX_BODY) -> None:
    """Run the server in the foreground until interrupted."""
    import uvicorn

    app, holder = build(ref, settings, poll_seconds=poll_seconds, max_body_bytes=max_body_bytes)
    log.info("serving %s version %s on http://%s:%d (docs at /docs)", holder.current.name,
             holder.current.version, host, port)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
