"""A responsive server: big requests are scored off the event loop, a row limit per request, request ids in logs.

Real uvicorn on 127.0.0.1 (in a thread, or `sparkship serve` in its own process), serving tests/test_server.py's
model (Imputer + StringIndexer + VectorAssembler + LogisticRegression, version 1). A request is held mid-scoring
through the kill-point mechanism (sparkship.killpoints, point ``serve:scoring``); the order of events is read from
the server's own log records, never from timings.
"""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparkship import killpoints
from sparkship.cli import main as cli_main
from sparkship.commands import serving as serving_command
from sparkship.refs import parse_ref
from sparkship.serving.server import (
    DEFAULT_MAX_ROWS,
    ENCODE_ROWS,
    ModelHolder,
    _encode,
    _parse,
    _parse_in_pieces,
    _score_records,
    create_app,
)
from sparkship.serving.source import resolve
from tests.helpers.ports import free_port, wait_for_health
from tests.helpers.server import GOOD, NAME, serve_in_thread

pytestmark = [pytest.mark.timeout(300), pytest.mark.seconds(22)]

BIG = GOOD * 2000  # 8,000 records, the scorer's batch path
GENERATED_ID = re.compile(r"[0-9a-f]{32}")


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)  # list.append is atomic: the server's threads log here at once

    def of(self, request_id: str) -> list[logging.LogRecord]:
        return [r for r in self.records if r.request_id == request_id]

    def positions(self, pattern: str) -> dict[str, int]:
        """request id -> index of the first record whose message matches ``pattern``."""
        out: dict[str, int] = {}
        for i, r in enumerate(list(self.records)):
            if re.search(pattern, r.getMessage()):
                out.setdefault(r.request_id, i)
        return out


@contextmanager
def server_logs() -> Iterator[Records]:
    """Every record of the serving package, DEBUG included, for the life of the block."""
    logger = logging.getLogger("sparkship.serving")
    handler, level = Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture(scope="module")
def served(registry_setup):  # noqa: F811 - the imported fixture
    settings, _ = registry_setup
    return settings, resolve(parse_ref(f"{NAME}/1"), settings)


def _send_big(base: str, answers: dict[int, httpx.Response], count: int) -> list[threading.Thread]:
    def post(i: int) -> None:
        with httpx.Client(base_url=base, timeout=120) as client:
            answers[i] = client.post("/predict", content=json.dumps(BIG), headers={"X-Request-ID": f"big-{i}"})

    senders = [threading.Thread(target=post, args=(i,)) for i in range(count)]
    for t in senders:
        t.start()
    return senders


def _check_big_answers(answers: dict[int, httpx.Response], served_model) -> None:
    scorer = served_model.scorer
    want = [scorer.score_one(r) for r in GOOD]
    for i, resp in sorted(answers.items()):
        assert resp.status_code == 200, resp.text
        assert resp.headers["x-request-id"] == f"big-{i}"
        predictions = resp.json()["predictions"]
        assert len(predictions) == len(BIG)
        for j in (0, 1, 2, 3, len(BIG) - 1):
            assert predictions[j]["prediction"] == want[j % len(GOOD)]["prediction"]
            assert max(abs(a - b) for a, b in zip(predictions[j]["probability"],
                                                  want[j % len(GOOD)]["probability"])) <= 1e-12


def test_health_answers_while_three_big_requests_are_held_mid_scoring(served, tmp_path, monkeypatch):
    """Three 8,000-record requests are inside scoring at once (held at the kill point); /health and a one-record
    request answer meanwhile.

    Scored on the event loop, the first held request would block the loop: the others would never start scoring
    and /health would not answer.
    """
    _, served_model = served
    flag = tmp_path / "held"
    monkeypatch.setenv(killpoints.POINT_ENV, "serve:scoring")
    monkeypatch.setenv(killpoints.FLAG_ENV, str(flag))
    answers: dict[int, httpx.Response] = {}
    with server_logs() as logs, serve_in_thread(create_app(ModelHolder(served_model), threads=3)) as client:
        senders = _send_big(str(client.base_url), answers, 3)
        deadline = time.monotonic() + 60
        while len(logs.positions(r"scoring 8000 records")) < 3:
            assert time.monotonic() < deadline, "the three requests were never inside scoring at the same time"
            time.sleep(0.05)
        health = [client.get("/health", headers={"X-Request-ID": f"health-{i}"}) for i in range(3)]
        assert [h.status_code for h in health] == [200, 200, 200]
        # Every scoring thread is taken: a one-record request, scored on the event loop, does not wait for one.
        one = client.post("/predict", json=GOOD[0], headers={"X-Request-ID": "one-record"})
        assert one.status_code == 200 and len(one.json()["predictions"]) == 1
        assert answers == {}, "a held request answered before it was let go"
        while any(t.is_alive() for t in senders):
            flag.unlink(missing_ok=True)  # each held request creates it again when it reaches the point
            assert time.monotonic() < deadline + 60, "the requests did not finish once let go"
            time.sleep(0.05)
    _check_big_answers(answers, served_model)
    started, done = logs.positions(r"scoring 8000 records"), logs.positions(r"scored 8000 records")
    answered = logs.positions(r"GET /health 200")
    assert set(started) == set(done) == {"big-0", "big-1", "big-2"}
    assert set(answered) == {"health-0", "health-1", "health-2"}
    assert max(started.values()) < logs.positions(r"POST /predict 200")["one-record"] < min(done.values())
    # Server-side order: all three began scoring, then /health answered three times, then any finished scoring.
    assert max(started.values()) < min(answered.values()) <= max(answered.values()) < min(done.values())


def test_health_answers_during_scoring_without_holding_anything(served):
    """No kill point: /health requests sent in a loop are answered between a big request's start and end of
    scoring. (Whether the three overlap depends on when they arrive; the held test above proves they can.)"""
    _, served_model = served
    answers: dict[int, httpx.Response] = {}
    with server_logs() as logs, serve_in_thread(create_app(ModelHolder(served_model), threads=3)) as client:
        senders = _send_big(str(client.base_url), answers, 3)
        probes = 0
        while any(t.is_alive() for t in senders):
            assert client.get("/health", headers={"X-Request-ID": f"health-{probes}"}).status_code == 200
            probes += 1
        for t in senders:
            t.join()
    _check_big_answers(answers, served_model)
    started, done = logs.positions(r"scoring 8000 records"), logs.positions(r"scored 8000 records")
    answered = sorted(logs.positions(r"GET /health 200").values())
    spans = [(started[k], done[k]) for k in ("big-0", "big-1", "big-2")]
    inside = [a for a in answered if any(s < a < d for s, d in spans)]
    assert inside, f"no /health answer while a request was being scored ({probes} sent)"


def test_a_request_over_the_row_limit_gets_413_naming_it(served):
    _, served_model = served
    assert serving_command.MAX_ROWS == DEFAULT_MAX_ROWS  # the CLI's default is the server's
    with serve_in_thread(create_app(ModelHolder(served_model), max_rows=100)) as client:
        over = client.post("/predict", content=json.dumps(GOOD * 25 + GOOD[:1]))
        assert over.status_code == 413
        msg = over.json()["detail"][0]["msg"]
        assert "101 records" in msg and "limit of 100 records" in msg and "--max-rows" in msg
        at_limit = client.post("/predict", content=json.dumps(GOOD * 25))
        assert at_limit.status_code == 200 and len(at_limit.json()["predictions"]) == 100
        assert client.post("/predict", json=GOOD[0]).status_code == 200
        # A body over the byte limit is still refused before it is parsed.
        assert client.post("/predict", content=json.dumps([GOOD[0]] * 30000)).status_code == 413


def test_request_ids_are_echoed_and_on_every_log_line_of_the_request(served):
    settings, served_model = served
    token = "t0ken-" + "y" * 30
    app = create_app(ModelHolder(served_model), token=token)
    auth = {"Authorization": f"Bearer {token}"}
    with server_logs() as logs, serve_in_thread(app) as client:
        given = client.post("/predict", content=json.dumps(GOOD * 100),
                            headers={**auth, "X-Request-ID": "client-id-42"})
        fresh = [client.post("/predict", json=GOOD[0], headers=auth) for _ in range(2)]
        odd = client.post("/predict", json=GOOD[0], headers={**auth, "X-Request-ID": "a b\tc"})
        bad = client.post("/predict", json={"age": "old", "plan": "pro", "income": 1.0},
                          headers={**auth, "X-Request-ID": "bad-record-7"})
        refused = client.get("/metadata", headers={"X-Request-ID": "no-token-1"})
        logging.getLogger("sparkship.serving.server").info("outside any request")
    assert given.status_code == 200 and given.headers["x-request-id"] == "client-id-42"
    ids = [r.headers["x-request-id"] for r in fresh + [odd]]
    assert all(GENERATED_ID.fullmatch(i) for i in ids) and len(set(ids)) == 3  # made up, one per request
    assert bad.status_code == 422 and bad.headers["x-request-id"] == "bad-record-7"
    assert refused.status_code == 401 and refused.headers["x-request-id"] == "no-token-1"
    # The scoring thread's lines and the access line carry the id, in the record and in the message.
    mine = logs.of("client-id-42")
    assert [r.getMessage().split("] ", 1)[1].split(" ")[0] for r in mine] == ["scoring", "scored", "POST"]
    assert {r.threadName.startswith("sparkship-score") for r in mine} == {True, False}
    # One record is scored on the event loop's thread: a hop to the pool and back would cost more than scoring it.
    assert not any(r.threadName.startswith("sparkship-score") for r in logs.of(ids[0]))
    assert all(r.getMessage().startswith("[request client-id-42] ") for r in mine)
    rejected = [r.getMessage() for r in logs.of("bad-record-7") if r.levelno == logging.INFO]
    assert len(rejected) == 1 and rejected[0].startswith("[request bad-record-7] 422: field 'age': ")
    unauthorised = [r.getMessage() for r in logs.of("no-token-1")]
    assert len(unauthorised) == 1 and unauthorised[0].startswith("[request no-token-1] GET /metadata 401 in ")
    # The server thread may log its last access line after the client has its response: found by its message.
    outside = [r for r in logs.records if r.getMessage() == "outside any request"]
    assert len(outside) == 1 and outside[0].request_id == "-"
    assert {r.request_id for r in logs.records} == {"client-id-42", "bad-record-7", "no-token-1", "-", *ids}


def test_serve_command_max_rows_flag_and_request_id_in_its_log(served, tmp_path, capsys):
    settings, _ = served
    assert cli_main(["--home", settings.home, "serve", "--model", f"{NAME}/1", "--max-rows", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--max-rows 0" in err[0] and "Traceback" not in err[0]
    port = free_port()
    log_path = tmp_path / "serve.log"
    env = {**os.environ, "SPARKSHIP_HOME": settings.home}
    with open(log_path, "w") as log:  # not -q: INFO lines, as an operator runs it
        proc = subprocess.Popen([sys.executable, "-m", "sparkship.cli", "serve", "--model", f"{NAME}/1",
                                 "--max-rows", "50", "--port", str(port)], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(proc, url, log_path)
        over = httpx.post(f"{url}/predict", content=json.dumps(GOOD * 13), headers={"X-Request-ID": "too-many-9"})
        ok = httpx.post(f"{url}/predict", content=json.dumps(GOOD * 12))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert over.status_code == 413 and over.headers["x-request-id"] == "too-many-9"
    assert "52 records is over the limit of 50 records" in over.json()["detail"][0]["msg"]
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 48
    lines = [line for line in log_path.read_text().splitlines() if "too-many-9" in line]
    assert len(lines) == 1 and "[request too-many-9] 413: 52 records, over the limit of 50" in lines[0]
    assert "at most 50 records per request" in log_path.read_text()


# --- parsing and encoding in pieces (the GIL changes hands in between) ----------------------------------------

ERROR = object()
# Strings made of the characters a cut could be fooled by, or plain; records mostly flat, as a client sends them.
strings = st.one_of(st.text(alphabet="abc", max_size=3), st.text(alphabet='ab "\\{}[],:', max_size=6))
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), strings)
nested = st.recursive(scalars, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(strings, kids, max_size=3),
                      max_leaves=4)
records = st.lists(st.dictionaries(strings, st.one_of(scalars, scalars, scalars, nested), max_size=3), max_size=40)


def _loads(text: str):
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return ERROR


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records, st.integers(1, 200), st.sampled_from([(",", ":"), (", ", ": "), (" ,\n ", " : ")]), st.data())
def test_a_body_parsed_in_pieces_is_what_json_loads_makes_of_it(sent, piece_chars, separators, data):
    text = json.dumps(sent, separators=separators)
    assert _parse_in_pieces(text, piece_chars) in (None, sent)
    # One character dropped or added: the pieces give json.loads's list, or give up (never a different value).
    at = data.draw(st.integers(0, len(text)))
    for broken in (text[:at] + text[at + 1:], text[:at] + data.draw(st.sampled_from(list(',]}[{" '))) + text[at:]):
        got, want = _parse_in_pieces(broken, piece_chars), _loads(broken)
        assert got is None or (want is not ERROR and got == want), (broken, got)


def test_large_bodies_are_parsed_and_encoded_in_pieces_as_at_once(served):
    _, served_model = served
    body = json.dumps(BIG).encode()
    assert _parse_in_pieces(body.decode(), 1000) == json.loads(body)  # the pieces are taken, not given up
    assert json.dumps(_parse(body)) == json.dumps(json.loads(body))  # NaN != NaN: compare the text
    for rows in (1, ENCODE_ROWS, ENCODE_ROWS + 1, len(BIG)):
        predictions = _score_records(served_model, json.loads(json.dumps(BIG[:rows])))
        want = {"model": served_model.name, "version": served_model.version, "predictions": predictions}
        assert _encode(served_model, predictions) == json.dumps(want).encode()
