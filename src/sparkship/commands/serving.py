"""``sparkship serve`` (REST server) and ``sparkship predict`` (score a file offline), both JVM-free."""
from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from sparkship.commands import Context, add_command
from sparkship.errors import UsageError
from sparkship.serving.server import DEFAULT_MAX_ROWS as MAX_ROWS
from sparkship.serving.server import TOKEN_ENV, read_token, serve
from sparkship.serving.source import resolve_source

log = logging.getLogger(__name__)
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
           ".pq": "parquet"}


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(
        subparsers, common, "serve", serve_model,
        "serve a model over HTTP (POST /predict, GET /health, GET /metadata, /docs) without a JVM",
        description="Serve a model over HTTP without a JVM: a registered model (--model NAME@ALIAS, followed as "
                    "it moves; NAME/VERSION; NAME for the latest version) or a model folder (--path: a Spark "
                    "PipelineModel folder, or an artifact folder holding model/ and manifest.json). With a token "
                    f"(--token-file, or the environment variable {TOKEN_ENV}) every path but /health needs "
                    "'Authorization: Bearer <token>'.",
    )
    _model_arguments(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to bind (default 127.0.0.1: this machine only; any other needs a token or "
                        "--allow-unauthenticated)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--poll-seconds", type=float, default=5.0,
                   help="how often to check whether NAME@ALIAS moved (default 5)")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="larger request bodies get 413 (1 MiB)")
    p.add_argument("--max-rows", type=int, default=MAX_ROWS, metavar="N",
                   help=f"a request with more records gets 413 naming the limit (default {MAX_ROWS:,}; larger "
                        "batches: `sparkship predict`)")
    p.add_argument("--token-file", default=None, metavar="FILE",
                   help=f"file whose first line is the bearer token clients must send (default: ${TOKEN_ENV})")
    p.add_argument("--allow-unauthenticated", action="store_true",
                   help="serve a non-loopback --host without a token (logs a warning)")

    p = add_command(
        subparsers, common, "predict", predict_file,
        "score a csv, jsonl or parquet file offline with the JVM-free scorer",
        description="Score a csv, jsonl or parquet file with the JVM-free scorer (the same one `serve` uses). "
                    "The output holds the input columns plus the model's outputs; rows Spark would drop "
                    "(handleInvalid='skip') are left out and counted.",
    )
    _model_arguments(p)
    p.add_argument("--input", required=True, help="input file (.csv, .jsonl, .parquet)")
    p.add_argument("--output", required=True, help="output file (.csv, .jsonl, .parquet)")


def _model_arguments(p: argparse.ArgumentParser) -> None:
    """--model (registry) or --path (folder): told apart by the flag, never guessed from what exists on disk."""
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", metavar="REF", help="a registered model: NAME@ALIAS, NAME/VERSION or NAME")
    which.add_argument("--path", metavar="FOLDER", help="a model folder (PipelineModel or artifact folder)")


def _format(path: str, what: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise UsageError(f"{what} {path}: unknown format '{ext}' (use .csv, .jsonl or .parquet)")
    return FORMATS[ext]


def serve_model(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    if not 0 < args.port < 65536:
        raise UsageError(f"--port {args.port} is not a TCP port")
    if args.poll_seconds <= 0:
        raise UsageError("--poll-seconds must be positive")
    if args.max_rows < 1:
        raise UsageError(f"--max-rows {args.max_rows}: allow at least one record per request")
    token = read_token(args.token_file)
    serve(args.model, ctx.settings, path=args.path, host=args.host, port=args.port, poll_seconds=args.poll_seconds,
          max_body_bytes=args.max_body_bytes, max_rows=args.max_rows, token=token,
          allow_unauthenticated=args.allow_unauthenticated)
    return {"model": args.model or args.path, "stopped": True}


def _read(path: str, fmt: str, types: dict[str, str]) -> Any:
    arrow_types = {"double": pa.float64(), "float": pa.float32(), "string": pa.string(), "boolean": pa.bool_(),
                   "tinyint": pa.int8(), "smallint": pa.int16(), "int": pa.int32(), "bigint": pa.int64()}
    try:
        if fmt == "parquet":
            return pq.read_table(path)
        if fmt == "csv":
            # Read the model's inputs with their signature types (no guessing: "007" stays a string).
            convert = pcsv.ConvertOptions(
                column_types={k: arrow_types[t] for k, t in types.items() if t in arrow_types},
                strings_can_be_null=True,
            )
            return pcsv.read_csv(path, convert_options=convert)
        with open(path) as fh:
            records = [json.loads(line) for line in fh if line.strip()]
        return records
    except FileNotFoundError:
        raise UsageError(f"input {path} does not exist") from None
    except (pa.ArrowInvalid, ValueError) as exc:
        raise UsageError(f"cannot read {path} as {fmt}: {exc}") from None


def _write(table: Any, path: str, fmt: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if fmt == "parquet":
        pq.write_table(table, path)
    elif fmt == "csv":
        # CSV has no lists: vectors are written as JSON arrays.
        cols = {}
        for name in table.column_names:
            col = table.column(name)
            if pa.types.is_list(col.type):
                col = pa.array([None if v is None else json.dumps(v) for v in col.to_pylist()], type=pa.string())
            cols[name] = col
        pcsv.write_csv(pa.table(cols), path)
    else:
        with open(path, "w") as fh:
            for row in table.to_pylist():
                fh.write(json.dumps(row, default=str) + "\n")


def predict_file(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    fmt_in, fmt_out = _format(args.input, "input"), _format(args.output, "output")
    served = resolve_source(ctx.settings, model=args.model, path=args.path)
    scorer = served.scorer
    data = _read(args.input, fmt_in, scorer.signature.types)
    result = scorer.score(data)
    table = data if isinstance(data, pa.Table) else pa.Table.from_pylist(data)
    kept = table.take(pa.array(result.rows, type=pa.int64()))
    scored = result.to_arrow()
    for name in scored.column_names:
        if name == "row":
            continue
        if name in kept.column_names:
            kept = kept.drop_columns([name])
        kept = kept.append_column(name, scored.column(name))
    _write(kept, args.output, fmt_out)
    log.info("scored %d of %d rows of %s with %s", kept.num_rows, result.num_input_rows, args.input, served.ref)
    return {
        "model": served.name,
        "version": served.version,
        "input": args.input,
        "output": args.output,
        "rows_in": result.num_input_rows,
        "rows_scored": kept.num_rows,
        "rows_dropped": len(result.dropped),
        "dropped_rows": result.dropped[:20].tolist(),
    }
