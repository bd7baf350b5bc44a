"""Property-based fuzzing of every endpoint of the three services: never a 5xx.

Each app runs in-process under schemathesis' ASGI transport, which starts the app's lifespan
once (when the schema is loaded) and keeps it until the fixture's teardown stops it. For every
operation of the service's OpenAPI document, positive and negative cases are generated and sent
with one of several credentials (none, malformed, unknown, node tokens, the admin token), with
path parameters and body fields that sometimes name things that exist (a real run, round,
version or session). Every answer must be below 500, every 4xx the documented
``{"error", "detail"}`` body, a rejected request must leave the service's state as it was, and
the service must still answer /health and /ready afterwards.

The msgpack and frame endpoints read bodies the schemas do not describe; hypothesis feeds them
random bytes, valid messages with random flips, truncations, extensions and huge declared
lengths, and well-formed messages whose tensors and sketches have arbitrary dtypes, shapes,
geometries and values.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import schemathesis
import torch
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.core.transport import Response
from schemathesis.python import asgi
from schemathesis.schemas import APIOperation, BaseSchema

from elsa.errors import TensorError
from elsa.runtime.config import parse_config
from elsa.sketch import sketch_state, sketches_to_payloads
from elsa.wire import (
    TENSOR_DTYPES,
    AdapterUpdate,
    BackwardRequest,
    ForwardRequest,
    Message,
    ProbeReport,
    SketchPayload,
    TensorPayload,
    encode,
    encode_frames,
    from_payload,
    to_payload,
)
from elsa.wire.control import NodeIdentity
from elsa_client.main import create_app as create_client
from elsa_client.settings import ClientSettings
from elsa_cloud.main import create_app as create_cloud
from elsa_edge.main import create_app as create_edge
from elsa_edge.settings import EdgeSettings
from elsa_edge.state import EdgeState, ServedRound

from .conftest import ADMIN_TOKEN, JOIN_SECRET, cloud_settings, run_config
from .support import HIDDEN, assert_error, bearer
from .test_edge import edge_config, served_round

#: bounded, repeatable runs: the same cases every time, no example database, no deadline
FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    phases=(Phase.explicit, Phase.generate, Phase.shrink),
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)
#: per property test over message bodies (each example is one cheap request)
BODY_EXAMPLES = 60
MAX_BODY = 256 * 1024
STATUS_TOKEN = "test-status-token"
#: the services' rate limits would answer the fuzzer 429 long before it reaches the handlers
NO_LIMITS: dict[str, Any] = {"rate_limit_per_s": 0.0, "auth_failures_per_min": 0}
#: credentials every case may be sent with, besides the service's real ones
FOREIGN_AUTH: dict[str, dict[str, str]] = {
    "none": {},
    "unknown token": bearer("not-a-token-of-this-deployment"),
    "empty bearer": {"authorization": "Bearer "},
    "basic scheme": {"authorization": "Basic dXNlcjpwYXNz"},
}
MSGPACK = {"content-type": "application/msgpack"}
FRAMES = {"content-type": "application/x-elsa-frames"}


# ------------------------------------------------------------------------------------- answers


def check_answer(response: Response | requests.Response, what: str) -> None:
    """Below 500; a 4xx is the documented error body."""
    answer = Response.from_any(response)
    status, content = answer.status_code, answer.content
    assert status < 500, f"{what}: {status} {content[:500]!r}"
    if status >= 400:
        content_type = answer.headers.get("content-type", [""])[0]
        assert content_type.startswith("application/json"), f"{what}: {status} {content_type}"
        body = json.loads(content)
        assert isinstance(body, dict) and set(body) == {"error", "detail"}, f"{what}: {status} {body}"
        assert isinstance(body["error"], str) and body["error"], f"{what}: {body}"
        assert isinstance(body["detail"], str) and body["detail"], f"{what}: {body}"


def sometimes(draw: Callable[[st.SearchStrategy[int]], int], one_in: int) -> bool:
    """True about once in ``one_in`` draws (decided by a middle value: hypothesis favours bounds)."""
    return draw(st.integers(0, one_in - 1)) == one_in // 2


@dataclass
class Target:
    """A running app under fuzzing: its schema, client and what the fuzzer may know."""

    app: FastAPI
    schema: BaseSchema
    client: requests.Session
    auths: dict[str, dict[str, str]]
    #: what a rejected request must not change
    snapshot: Callable[[], object]
    #: path parameter -> values that name something that exists now
    known: Callable[[], dict[str, list[Any]]] = dict
    #: top-level JSON body field -> values that name something that exists
    known_fields: dict[str, list[Any]] = field(default_factory=dict)
    #: operation label -> path parameters it names other things with
    known_for: dict[str, dict[str, list[Any]]] = field(default_factory=dict)

    def healthy(self) -> bool:
        return all(self.client.get(path).status_code == 200 for path in ("/health", "/ready"))


@contextmanager
def running(app: FastAPI) -> Iterator[tuple[BaseSchema, requests.Session]]:
    """Load the app's schema (which starts its lifespan) and yield it with a client; stop the
    lifespan at the end."""
    try:
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        with asgi.get_client(app) as client:
            yield schema, client
    finally:
        asgi.shutdown_lifespans()


def _bounded_waits(case: schemathesis.Case) -> None:
    """Long polls answer at once: a missing or valid ``wait_s`` becomes 0 (invalid ones stay)."""
    if "wait_s" not in case.operation.query:
        return
    if case.query is None:
        case.query = {}
    try:
        value = float(case.query.get("wait_s", 0))
    except (TypeError, ValueError):
        return
    if math.isfinite(value) and value >= 0:
        case.query["wait_s"] = 0


#: integers past the 32- and 64-bit ranges that stores and wire formats hold
BOUNDARY_INTS = st.sampled_from([2**31, 2**63, 2**64, -(2**63) - 1, 10**30])


def _boundary_ints(value: Any, data: st.DataObject) -> Any:
    """A JSON body with some of its integers (at any depth) replaced by boundary values: the
    schemas rarely bound integers, and generated ones are mostly small."""
    if isinstance(value, dict):
        return {key: _boundary_ints(item, data) for key, item in value.items()}
    if isinstance(value, list):
        return [_boundary_ints(item, data) for item in value]
    if isinstance(value, int) and not isinstance(value, bool) and sometimes(data.draw, 4):
        return data.draw(BOUNDARY_INTS, label="boundary int")
    return value


def fuzz_operation(target: Target, operation: APIOperation) -> None:
    """Positive and negative cases of one operation, each with one of the target's credentials and
    sometimes real path parameters and body fields; checks every answer, the state and liveness."""
    cases = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )
    trusted = sorted(set(target.auths) - set(FOREIGN_AUTH))
    # most cases carry a real credential, so that they get past authentication
    credentials = st.sampled_from(trusted * 5 + sorted(FOREIGN_AUTH))
    mutating = operation.method.upper() != "GET"

    @FUZZ
    @given(case=cases, who=credentials, data=st.data())
    def run(case: schemathesis.Case, who: str, data: st.DataObject) -> None:
        known = {**target.known(), **target.known_for.get(operation.label, {})}
        # three in four path parameters and body fields that can name something real do
        for name in list(case.path_parameters or {}):
            if known.get(name) and not sometimes(data.draw, 4):
                case.path_parameters[name] = data.draw(st.sampled_from(known[name]), label=name)
        if isinstance(case.body, dict):
            for name, values in target.known_fields.items():
                if name in case.body and not sometimes(data.draw, 4):
                    case.body[name] = data.draw(st.sampled_from(values), label=name)
            case.body = _boundary_ints(case.body, data)
        _bounded_waits(case)
        before = target.snapshot() if mutating else None
        response = case.call(session=target.client, headers=target.auths[who])
        what = f"{operation.label} as {who}: {case.as_curl_command(headers=target.auths[who])}"
        check_answer(response, what)
        if mutating and 400 <= response.status_code < 500:
            assert target.snapshot() == before, f"{what}: rejected ({response.text}) but changed the state"

    run()
    assert target.healthy(), f"{operation.label}: the service stopped answering"


def fuzz_every_operation(target: Target) -> list[str]:
    """Fuzz every operation of the document; returns their labels."""
    done = []
    for result in target.schema.get_all_operations():
        operation = result.ok()  # a schema error fails the test
        fuzz_operation(target, operation)
        done.append(operation.label)
    return done


# --------------------------------------------------------------------------------- hostile bytes


ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "uint8": 1, "bool": 1}
#: huge values written over the bytes at some offset: frame prefixes, msgpack lengths
HUGE_LENGTHS = (0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, MAX_BODY + 1, 2 * MAX_BODY)


@st.composite
def hostile_bytes(draw: st.DrawFn, valid: bytes) -> bytes:
    """Random bytes, or ``valid`` with 1-4 random flips, truncations, deletions, insertions,
    extensions (some past the body limit) and huge 4-byte lengths written over it."""
    if sometimes(draw, 10):
        return draw(st.binary(max_size=512))
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "delete", "insert", "extend", "length", "oversize"]))
        # mutations favour the first bytes: envelope, ids, shapes and sketch fields live there
        end = len(data) if draw(st.booleans()) else min(len(data), 256)
        at = draw(st.integers(0, max(end - 1, 0)))
        if op == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif op == "truncate":
            del data[at:]
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "extend":
            data += draw(st.binary(min_size=1, max_size=64))
        elif op == "length":
            data[at : at + 4] = draw(st.sampled_from(HUGE_LENGTHS)).to_bytes(4, "big")
        elif op == "oversize":
            data += bytes(MAX_BODY)
    return bytes(data)


#: dimensions: small, the hidden size and its neighbours, and ones past int32/int64 strides
DIMS = st.sampled_from([0, 1, 2, 3, 5, HIDDEN - 1, HIDDEN, HIDDEN + 1, 2**31, 2**62])


def _tensor_data(draw: st.DrawFn, dtype: str, numel: int) -> bytes:
    """``numel`` elements of ``dtype`` (zeros, small finite values, values near the fp16 maximum,
    random bits or NaN), or a buffer of the wrong length."""
    size = numel * ITEMSIZE.get(dtype, 4)
    if size > 64 * 1024 or sometimes(draw, 10):
        return draw(st.binary(max_size=64))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    fill = draw(st.sampled_from(["zeros", "small", "large", "bits", "nan"]))
    if fill == "zeros":
        return bytes(size)
    if fill == "bits" or dtype not in ("float32", "float16", "bfloat16"):
        return rng.integers(0, 2 if dtype == "bool" else 256, size, dtype=np.uint8).tobytes()
    values = rng.uniform(-1, 1, numel).astype(np.float32)
    if fill == "large":  # finite in every wire dtype, but a sum of two overflows fp16
        values = np.sign(values) * np.float32(60_000)
    if fill == "nan" and numel:
        values[rng.integers(numel)] = np.nan
    if dtype == "float16":
        return values.astype("<f2").tobytes()
    if dtype == "bfloat16":
        return (values.view("<u4") >> 16).astype("<u2").tobytes()
    return values.astype("<f4").tobytes()


@st.composite
def tensor_payloads(draw: st.DrawFn, shape: tuple[int, ...] | None = None) -> TensorPayload:
    """A tensor payload of any dtype (unknown ones too), of ``shape`` or any shape, with any data;
    built without validation."""
    unknown = sometimes(draw, 10)
    dtype = draw(st.sampled_from(["float64", "complex64"] if unknown else TENSOR_DTYPES))
    if shape is None:
        shape = tuple(draw(st.lists(DIMS, max_size=4)))
    data = _tensor_data(draw, dtype, math.prod(shape))
    return TensorPayload.model_construct(dtype=dtype, shape=shape, data=data)


def wire_ints() -> st.SearchStrategy[int]:
    """Integers msgpack can carry: small, at the edges of the wire's ranges, negative."""
    return st.one_of(st.integers(-2, 3), st.sampled_from([-(2**63), 2**31, 2**63 - 1, 2**63, 2**64 - 1]))


def frames(message: Message) -> bytes:
    return b"".join(bytes(piece) for piece in encode_frames(message))


def scaled_tables(update: AdapterUpdate, value: float) -> AdapterUpdate:
    """``update`` with every sketch table filled with ``value``."""
    sketches = {
        name: sketch.model_copy(
            update={"table": to_payload(torch.full(tuple(sketch.table.shape), value), "fp32")}
        )
        for name, sketch in update.sketches.items()
    }
    return update.model_copy(update={"sketches": sketches})


@st.composite
def hostile_sketches(draw: st.DrawFn, update: AdapterUpdate) -> AdapterUpdate:
    """``update`` with one sketch's geometry fields and table replaced by arbitrary values, a
    sketch dropped or added, or every table scaled up to the fp16 range, and its own fields
    changed; built without validation."""
    sketches = dict(update.sketches)
    key = draw(st.sampled_from(sorted(sketches)))
    good = sketches[key]
    how = draw(st.sampled_from(["geometry", "table", "drop", "add", "scale", "scale"]))
    if how == "scale":  # valid, but edge rounds merged on top of each other overflow fp16
        sketches = dict(scaled_tables(update, draw(st.sampled_from([3e4, 6e4]))).sketches)
    elif how == "drop":
        del sketches[key]
    elif how == "add":
        sketches[draw(st.sampled_from(["no.such.key", "x" * 600, key + ".extra"]))] = good
    else:
        fields: dict[str, Any] = good.model_dump()
        fields["table"] = good.table
        if how == "geometry":
            for name in sorted(
                draw(st.sets(st.sampled_from(["rows", "cols", "length", "seed", "round", "dense"])))
            ):
                fields[name] = draw(st.booleans()) if name == "dense" else draw(wire_ints())
        shape = (fields["rows"], fields["cols"]) if draw(st.booleans()) else None
        if how == "table" or shape is not None:
            fields["table"] = draw(tensor_payloads(shape if how == "table" else None))
        sketches[key] = SketchPayload.model_construct(**fields)
    changes: dict[str, Any] = {"sketches": sketches}
    for name in sorted(
        draw(st.sets(st.sampled_from(["round", "num_examples", "weight", "loss"]), max_size=2))
    ):
        changes[name] = draw(
            st.one_of(wire_ints(), st.floats()) if name in ("weight", "loss") else wire_ints()
        )
    return update.model_copy(update=changes)


# ----------------------------------------------------------------------------------------- cloud

CLOUD_CONFIG = parse_config(run_config())


@dataclass
class CloudRun:
    """A cloud whose run collects round 1 from two edges, with its joined nodes and a spare run."""

    target: Target
    run_id: str
    spare_run_id: str
    #: role-index -> (node id, auth header), e.g. "edge-0", "device-1"
    nodes: dict[str, tuple[str, dict[str, str]]]

    @property
    def client(self) -> requests.Session:
        return self.target.client

    def state(self) -> Any:
        return self.target.app.state.cloud

    def update(self) -> AdapterUpdate:
        """edge-0's valid upload for round 1: sketches of a small delta of every adapter key."""
        model, _ = self.state().models[self.run_id]
        g = torch.Generator().manual_seed(0)
        delta = {k: torch.randn(v.shape, generator=g) * 0.01 for k, v in model.initial_state().items()}
        sketches = sketch_state(delta, CLOUD_CONFIG.sketch_params(), 1, CLOUD_CONFIG.seed)
        return AdapterUpdate(
            node_id=self.nodes["edge-0"][0],
            run_id=self.run_id,
            round=1,
            num_examples=10,
            sketches=sketches_to_payloads(sketches),
        )

    def probes(self) -> ProbeReport:
        """device-0's valid probe report for round 1 (a fingerprint round)."""
        control = CLOUD_CONFIG.control
        predictions = np.random.default_rng(0).dirichlet(np.ones(3), size=control.num_probes)
        return ProbeReport(
            node_id=self.nodes["device-0"][0],
            run_id=self.run_id,
            round=1,
            predictions=to_payload(torch.from_numpy(predictions), "fp32"),
            mu=to_payload(torch.zeros(control.basis_dim), "fp32"),
            sigma=to_payload(torch.eye(control.basis_dim), "fp32"),
        )


def _join(client: requests.Session, role: str, name: str) -> tuple[str, dict[str, str]]:
    body = {"join_secret": JOIN_SECRET, "role": role, "name": name}
    if role == "edge":
        body["url"] = f"http://{name}.invalid:8100"
    response = client.post("/v1/nodes/join", json=body)
    assert response.status_code == 200, response.text
    return response.json()["node_id"], bearer(response.json()["token"])


def _wait_for_train(client: requests.Session, auth: dict[str, str], run_id: str) -> None:
    after = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        response = client.get("/v1/tasks/next", params={"after": after, "wait_s": 1}, headers=auth)
        assert response.status_code == 200, response.text
        task = response.json()
        if task["kind"] == "train" and task["run_id"] == run_id and task["round"] == 1:
            return
        after = int(response.headers["x-elsa-task-seq"])
    raise AssertionError(f"round 1 of {run_id} did not start")


def _database(path: Path, runs: tuple[str, ...]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the cloud's SQLite database (read-only), but of rows that belong to a run only
    those of ``runs`` (runs the fuzzer creates may start in the background) and their ids."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in sorted(tables):
            columns = [column[1] for column in db.execute(f'PRAGMA table_info("{table}")')]
            rows = db.execute(f'SELECT * FROM "{table}"').fetchall()
            if "run_id" in columns:
                at = columns.index("run_id")
                if table == "runs":
                    out["run ids"] = sorted((row[at],) for row in rows)
                rows = [row for row in rows if row[at] in runs]
            out[table] = sorted(rows, key=repr)
    return out


@pytest.fixture
def cloud_run(tmp_path: Path) -> Iterator[CloudRun]:
    database = tmp_path / "elsa.db"
    settings = cloud_settings(tmp_path, max_task_wait_s=1.0, max_body_bytes=MAX_BODY, **NO_LIMITS)
    app = create_cloud(settings)
    admin = bearer(ADMIN_TOKEN)
    with running(app) as (schema, client):
        nodes = {
            f"{role}-{i}": _join(client, role, f"{role}-{i}") for role in ("edge", "device") for i in (0, 1)
        }
        # two edges: an edge model the fuzzer gets accepted does not complete the round
        config = run_config()
        config["topology"] = {"edges": 2, "devices_per_edge": 1}
        created = client.post("/v1/runs", json={"config": config}, headers=admin)
        assert created.status_code == 201, created.text
        run_id = created.json()["run_id"]
        for i in (0, 1):
            _wait_for_train(client, nodes[f"device-{i}"][1], run_id)
        # a run the fuzzer may pause, resume and stop: it waits for devices that never join, so
        # nothing but those requests changes it
        spare = {**run_config(), "name": "spare", "topology": {"edges": 1, "devices_per_edge": 1000}}
        spare_created = client.post("/v1/runs", json={"config": spare}, headers=admin)
        assert spare_created.status_code == 201, spare_created.text
        spare_id = spare_created.json()["run_id"]

        def snapshot() -> object:
            state = app.state.cloud
            held = {kind: sorted(getattr(state, kind).get((run_id, 1), {})) for kind in ("uploads", "probes")}
            return _database(database, (run_id, spare_id)), held

        known = {
            "run_id": [run_id],
            "round_index": [1],
            "version": [0],
            "filename": ["adapter_config.json", "adapter_model.safetensors"],
        }
        target = Target(
            app=app,
            schema=schema,
            client=client,
            auths={
                **FOREIGN_AUTH,
                "admin": admin,
                "edge": nodes["edge-0"][1],
                "device": nodes["device-0"][1],
            },
            snapshot=snapshot,
            known=lambda: known,
            # (a config waiting for more devices than ever join, and not the join secret: runs
            # the fuzzer creates must not start rounds)
            known_fields={
                "run_id": [run_id],
                "round": [1],
                "token": [nodes["device-1"][1]["authorization"].removeprefix("Bearer ")],
                "config": [{**run_config(), "topology": {"edges": 1, "devices_per_edge": 1000}}],
            },
            known_for={"POST /v1/runs/{run_id}/{action}": {"run_id": [spare_id]}},
        )
        yield CloudRun(target, run_id, spare_id, nodes)


def test_cloud_endpoints_never_fail(cloud_run: CloudRun) -> None:
    done = fuzz_every_operation(cloud_run.target)
    assert len(done) >= 25 and "POST /v1/runs/{run_id}/rounds/{round_index}/edge-models" in done
    rounds = cloud_run.client.get(f"/v1/runs/{cloud_run.run_id}/rounds", headers=bearer(ADMIN_TOKEN))
    assert [r["state"] for r in rounds.json()] == ["training"]


def _post_bodies(
    run: CloudRun,
    endpoints: dict[str, tuple[str, dict[str, str], bytes]],
    bodies: Callable[[str, bytes], Any],
) -> set[str]:
    """Post a hostile body to one of ``endpoints`` per example; returns those that accepted one.
    A refusal must be the error body and change nothing."""
    accepted: set[str] = set()

    @settings(FUZZ, max_examples=BODY_EXAMPLES)
    @given(which=st.sampled_from(sorted(endpoints)), data=st.data())
    def post(which: str, data: st.DataObject) -> None:
        url, auth, valid = endpoints[which]
        body = data.draw(bodies(which, valid), label="body")
        before = run.target.snapshot()
        response = run.client.post(url, data=body, headers={**MSGPACK, **auth})
        check_answer(response, f"POST {url} with {len(body)} bytes")
        if response.status_code < 300:
            accepted.add(which)
        else:
            assert run.target.snapshot() == before, (
                f"POST {url}: rejected ({response.text}) but changed the state"
            )

    post()
    assert run.target.healthy()
    return accepted


def _cloud_bodies(run: CloudRun) -> dict[str, tuple[str, dict[str, str], bytes]]:
    round_1 = f"/v1/runs/{run.run_id}/rounds/1"
    return {
        "edge-models": (f"{round_1}/edge-models", run.nodes["edge-0"][1], encode(run.update())),
        "probes": (f"{round_1}/probes", run.nodes["device-0"][1], encode(run.probes())),
    }


def _still_accepts(
    run: CloudRun, endpoints: dict[str, tuple[str, dict[str, str], bytes]], accepted: set[str]
) -> None:
    """The valid message is accepted afterwards, or refused as a replay if a hostile one was."""
    for which, (url, auth, valid) in endpoints.items():
        response = run.client.post(url, data=valid, headers={**MSGPACK, **auth})
        expected = 409 if which in accepted else 200
        assert response.status_code == expected, (which, response.text)


def test_cloud_msgpack_endpoints_survive_mutated_bytes(cloud_run: CloudRun) -> None:
    endpoints = _cloud_bodies(cloud_run)
    assert all(len(valid) < MAX_BODY for _, _, valid in endpoints.values())
    accepted = _post_bodies(cloud_run, endpoints, lambda which, valid: hostile_bytes(valid))
    _still_accepts(cloud_run, endpoints, accepted)


def test_cloud_msgpack_endpoints_survive_hostile_tensors(cloud_run: CloudRun) -> None:
    update, probes = cloud_run.update(), cloud_run.probes()
    endpoints = _cloud_bodies(cloud_run)

    @st.composite
    def messages(draw: st.DrawFn, which: str, valid: bytes) -> bytes:
        if which == "edge-models":
            return encode(draw(hostile_sketches(update)))
        changes: dict[str, Any] = {}
        for name in sorted(draw(st.sets(st.sampled_from(["predictions", "mu", "sigma"]), min_size=1))):
            good = getattr(probes, name)
            shape = tuple(good.shape) if draw(st.booleans()) else None
            changes[name] = draw(st.one_of(st.none(), tensor_payloads(shape)))
        return encode(probes.model_copy(update=changes))

    accepted = _post_bodies(cloud_run, endpoints, messages)
    _still_accepts(cloud_run, endpoints, accepted)


# ------------------------------------------------------------------------------------------ edge

EDGE_RUN = "fuzz-run"
EDGE_DEVICES = ("device-000", "device-001")


EDGE_TOKENS = {d: f"session-token-of-{d}" for d in EDGE_DEVICES}


@dataclass
class EdgeServing:
    """A running edge serving round 1 of EDGE_RUN to EDGE_DEVICES, device-000's session open;
    only device-000 is fuzzed, so each edge round aggregates with its update alone."""

    app: FastAPI
    client: requests.Session
    served: ServedRound = field(init=False)
    session_id: str = field(init=False)
    target: Target = field(init=False)
    device: dict[str, str] = field(default_factory=lambda: bearer(EDGE_TOKENS[EDGE_DEVICES[0]]))

    def __post_init__(self) -> None:
        self.serve_round()

    @property
    def state(self) -> EdgeState:
        state: EdgeState = self.app.state.edge
        return state

    def serve_round(self) -> None:
        """Serve round 1 afresh (nothing submitted, nothing aggregated) and open the session, as
        the worker does after a ``serve`` task."""
        self.served = served_round(edge_config("fuzz"), EDGE_RUN, EDGE_DEVICES, EDGE_TOKENS)
        self.state.models[EDGE_RUN] = self.served.model
        self.state.rounds[EDGE_RUN] = self.served
        self.state.sessions.clear()
        body = {"run_id": EDGE_RUN, "round": 1, "device_id": EDGE_DEVICES[0]}
        opened = self.client.post("/v1/sessions", json=body, headers=self.device)
        assert opened.status_code == 200, opened.text
        self.session_id = opened.json()["session_id"]

    def snapshot(self) -> object:
        """What a rejected request must not change."""
        edge_round = self.served.edge_round
        return (
            sorted((sid, s.device_id, s.pending) for sid, s in self.state.sessions.items()),
            sorted(edge_round.sessions),
            {r: sorted(subs) for r, subs in edge_round.submissions.items() if subs},
            sorted(self.served.first_submit_at),
            sorted(edge_round.models),
            self.state.bytes_in,
        )

    def post(self, what: str, body: bytes, query: str = "") -> requests.Response:
        content_type = MSGPACK if what == "updates" else FRAMES
        return self.client.post(
            f"/v1/sessions/{self.session_id}/{what}{query}",
            data=body,
            headers={**content_type, **self.device},
        )

    def forward_request(self, step: int = 0) -> ForwardRequest:
        x = torch.randn(2, 5, HIDDEN, generator=torch.Generator().manual_seed(step))
        mask = torch.ones(2, 5, dtype=torch.uint8)
        return ForwardRequest(
            session_id=self.session_id,
            step=step,
            activations=to_payload(x, "fp32"),
            attention_mask=to_payload(mask),
        )

    def backward_request(self, step: int = 0) -> BackwardRequest:
        grad = torch.randn(2, 5, HIDDEN, generator=torch.Generator().manual_seed(step))
        return BackwardRequest(session_id=self.session_id, step=step, grad=to_payload(grad, "fp32"))

    def update(self) -> AdapterUpdate:
        """device-000's valid update: the sketches of a small delta of its head/tail keys."""
        edge_round = self.served.edge_round
        keys = self.served.device_keys(EDGE_DEVICES[0])
        delta = {k: torch.full_like(edge_round.start[k], 0.01) for k in keys}
        sketches = sketch_state(delta, edge_round.sketch, edge_round.round_index, edge_round.seed)
        return AdapterUpdate(
            node_id=EDGE_DEVICES[0],
            run_id=EDGE_RUN,
            round=1,
            num_examples=4,
            sketches=sketches_to_payloads(sketches),
        )


def _edge_app() -> FastAPI:
    settings = EdgeSettings(
        autostart=False,
        cloud_url="http://127.0.0.1:9",
        max_body_bytes=MAX_BODY,
        status_token=STATUS_TOKEN,
        **NO_LIMITS,
    )
    app = create_edge(settings)

    def introspect(token: str) -> NodeIdentity | None:  # the cloud, as far as this edge asks it
        if token == NODE_TOKEN:
            return NodeIdentity(node_id="device-device-002-fuzz", role="device", name="device-002")
        return None

    app.state.cloud.introspect = introspect
    app.state.cloud.backoff_s = 0.01  # uploads to the unreachable cloud fail fast
    app.state.edge.node_id = "edge-edge-0-fuzz"
    return app


NODE_TOKEN = "node-token-of-device-002"


@pytest.fixture
def edge_serving() -> Iterator[EdgeServing]:
    app = _edge_app()
    with running(app) as (schema, client):
        edge = EdgeServing(app, client)
        edge.target = Target(
            app=app,
            schema=schema,
            client=client,
            auths={
                **FOREIGN_AUTH,
                "device": edge.device,
                "other device": bearer(EDGE_TOKENS[EDGE_DEVICES[1]]),
                "node": bearer(NODE_TOKEN),
                "status": bearer(STATUS_TOKEN),
            },
            snapshot=edge.snapshot,
            # a session the fuzzer opens replaces the device's previous one
            known=lambda: {"session_id": sorted(edge.state.sessions)},
            known_fields={"run_id": [EDGE_RUN], "round": [1], "device_id": list(EDGE_DEVICES)},
        )
        yield edge


def test_edge_endpoints_never_fail(edge_serving: EdgeServing) -> None:
    done = fuzz_every_operation(edge_serving.target)
    assert "POST /v1/sessions/{session_id}/forward" in done


SESSION_ENDPOINTS = ("forward", "backward", "updates")
#: edge rounds an update may name: mostly real ones (tau2 = 2), replays, past tau2, negative, huge
EDGE_ROUNDS = st.sampled_from([0, 0, 1, 1, 2, -1, 2**63])


def _post_edge_bodies(
    edge: EdgeServing, what: str, bodies: Callable[[st.DataObject], bytes], examples: int = BODY_EXAMPLES
) -> None:
    """Post a hostile body to the session's ``what`` endpoint per example (after a valid forward,
    sometimes, so that a backward has a pending step; updates: one to three of them, to a round
    served afresh). A refusal must be the error body and change nothing; the session keeps
    serving a full step afterwards."""

    @settings(FUZZ, max_examples=examples)
    @given(pending=st.booleans(), data=st.data())
    def post(pending: bool, data: st.DataObject) -> None:
        if what == "updates":
            edge.serve_round()  # each example's updates go through the edge rounds from the start
        if pending:
            assert edge.post("forward", frames(edge.forward_request())).status_code == 200
        for index in range(data.draw(st.integers(1, 3), label="posts") if what == "updates" else 1):
            body = bodies(data)
            query = ""
            if what == "updates":  # mostly the edge rounds in order
                edge_round = data.draw(EDGE_ROUNDS, label="edge_round") if sometimes(data.draw, 4) else index
                query = f"?edge_round={edge_round}"
            elif what == "forward" and data.draw(st.booleans(), label="inference"):
                query = "?inference=true"
            before = edge.snapshot()
            response = edge.post(what, body, query)
            check_answer(response, f"POST {what}{query} with {len(body)} bytes")
            if response.status_code >= 400:
                assert edge.snapshot() == before, (
                    f"POST {what}: rejected ({response.text}) but changed the state"
                )

    post()
    assert edge.target.healthy()
    assert edge.post("forward", frames(edge.forward_request(7))).status_code == 200
    assert edge.post("backward", frames(edge.backward_request(7))).status_code == 200


@pytest.mark.parametrize("what", SESSION_ENDPOINTS)
def test_edge_session_endpoints_survive_mutated_bytes(edge_serving: EdgeServing, what: str) -> None:
    valid = {
        "forward": frames(edge_serving.forward_request()),
        "backward": frames(edge_serving.backward_request()),
        "updates": encode(edge_serving.update()),
    }[what]
    _post_edge_bodies(edge_serving, what, lambda data: data.draw(hostile_bytes(valid), label="body"))


#: (batch, sequence) of cut tensors: ordinary, empty, and with extents past int32 / int64 strides
CUT_SIZES = st.sampled_from([(0, 2**62), (2, 5), (0, 5), (2**62, 0), (2, 0), (0, 2**31), (2**31, 2), (1, 1)])


@pytest.mark.parametrize("what", SESSION_ENDPOINTS)
def test_edge_session_endpoints_survive_hostile_tensors(edge_serving: EdgeServing, what: str) -> None:
    update = edge_serving.update()

    def body(data: st.DataObject) -> bytes:
        if what == "updates":
            return encode(data.draw(hostile_sketches(update), label="update"))
        sid = edge_serving.session_id
        session_id = "s-someone-else" if sometimes(data.draw, 6) else sid
        step = data.draw(wire_ints(), label="step") if sometimes(data.draw, 4) else 0
        batch, seq = data.draw(CUT_SIZES, label="batch, seq")
        # mostly of the shape the body expects (any batch and sequence, the hidden size)
        hidden = data.draw(st.sampled_from([HIDDEN, HIDDEN, HIDDEN, HIDDEN + 1, 0]), label="hidden")
        shaped = None if sometimes(data.draw, 4) else (batch, seq, hidden)
        tensor = data.draw(tensor_payloads(shaped), label="tensor")
        if what == "backward":
            return frames(BackwardRequest.model_construct(session_id=session_id, step=step, grad=tensor))
        mask_shape = (batch, seq) if data.draw(st.booleans(), label="mask shaped") else None
        mask = data.draw(tensor_payloads(mask_shape), label="mask")
        request = ForwardRequest.model_construct(
            session_id=session_id, step=step, activations=tensor, attention_mask=mask
        )
        return frames(request)

    _post_edge_bodies(edge_serving, what, body, examples=2 * BODY_EXAMPLES)


# ---------------------------------------------------------------------------------------- client


def test_client_endpoints_never_fail() -> None:
    app = create_client(
        ClientSettings(
            autostart=False, cloud_url="http://127.0.0.1:9", status_token=STATUS_TOKEN, **NO_LIMITS
        )
    )
    app.state.agent.status.node_id = "device-device-000-fuzz"  # joined: /ready answers 200
    with running(app) as (schema, client):
        target = Target(
            app=app,
            schema=schema,
            client=client,
            auths={**FOREIGN_AUTH, "status": bearer(STATUS_TOKEN)},
            snapshot=lambda: None,
        )
        assert set(fuzz_every_operation(target)) >= {"GET /health", "GET /ready", "GET /status"}


# ------------------------------------------------------------------ regressions found by fuzzing


def test_indices_past_sql_integers_and_odd_run_ids_in_urls_are_422(cloud_run: CloudRun) -> None:
    """Were 500s: a version of 2**63 overflowed SQLite; under PostgreSQL rounds and versions past
    2**31 - 1 (32-bit columns) and run ids holding NUL failed in the driver."""
    run, admin = cloud_run, bearer(ADMIN_TOKEN)
    edge, device = run.nodes["edge-0"][1], run.nodes["device-0"][1]
    report = {"run_id": run.run_id, "round": 2**31}
    before = run.target.snapshot()
    for method, path, auth in [
        ("GET", f"/v1/runs/{run.run_id}/adapters/{2**63}/delta", edge),
        ("GET", f"/v1/runs/{run.run_id}/adapters/{2**31}", edge),
        ("GET", f"/v1/runs/{run.run_id}/adapters/-1", edge),
        ("GET", f"/v1/runs/{run.run_id}/adapters/{2**31}/peft/adapter_config.json", admin),
        ("POST", f"/v1/runs/{run.run_id}/rounds/{2**31}/edge-models", edge),
        ("POST", f"/v1/runs/{run.run_id}/rounds/{2**63}/probes", device),
        ("POST", f"/v1/runs/{run.run_id}/rounds/{2**31}/reports", device),
        ("GET", "/v1/runs/a%00b", admin),
        ("GET", "/v1/runs/a%00b/rounds", admin),
        ("POST", "/v1/runs/a%00b/pause", admin),
        ("GET", "/v1/runs/a%00b/adapters/0", edge),
        ("GET", f"/v1/runs/{'r' * 129}/metrics", admin),
    ]:
        body = report if path.endswith("reports") else None
        response = run.client.request(method, path, headers=auth, json=body)
        assert_error(response, 422, "invalid_request")  # type: ignore[arg-type]
    assert run.target.snapshot() == before
    assert run.target.healthy()


def test_a_byte_count_past_int64_is_422_and_records_nothing(cloud_run: CloudRun) -> None:
    """Was a 500 after the report's metrics were stored: the byte count overflowed SQL."""
    run, device = cloud_run, cloud_run.nodes["device-0"][1]
    url = f"/v1/runs/{run.run_id}/rounds/1/reports"
    report = {"run_id": run.run_id, "round": 1, "metrics": {"loss": 0.5}}
    before = run.target.snapshot()
    for count in (2**63, 2**64 + 1):
        response = run.client.post(url, json={**report, "bytes": {"activations": count}}, headers=device)
        assert_error(response, 422, "invalid_request", mentions="2**63")  # type: ignore[arg-type]
        assert run.target.snapshot() == before
    assert run.client.post(url, json={**report, "bytes": {"activations": 2**63 - 1}}, headers=device).ok


def test_a_run_with_more_rounds_than_sql_holds_is_422(cloud_run: CloudRun) -> None:
    """Was a 500: cloud_rounds past the 32-bit column (PostgreSQL) or int64 (SQLite)."""
    run = cloud_run
    before = run.target.snapshot()
    for rounds in (2**31, 2**63):
        config = run_config(cloud_rounds=rounds)
        response = run.client.post("/v1/runs", json={"config": config}, headers=bearer(ADMIN_TOKEN))
        assert_error(response, 422, "invalid_config", mentions="train.cloud_rounds")  # type: ignore[arg-type]
    assert run.target.snapshot() == before


def test_tensor_payloads_whose_extent_overflows_strides_are_refused() -> None:
    """An empty tensor holds no bytes, but torch multiplies its other dimensions into strides."""
    for shape in [(0, 2**62, HIDDEN), (2**62, 0, HIDDEN), (0, 2**31, 2**31, 2)]:
        with pytest.raises(TensorError, match="too large"):
            TensorPayload(dtype="float32", shape=shape, data=b"")
        with pytest.raises(TensorError, match="too large"):
            from_payload(TensorPayload.model_construct(dtype="float32", shape=shape, data=b""))
    assert from_payload(TensorPayload(dtype="float32", shape=(0, 2**61, 2), data=b"")).numel() == 0


def test_an_empty_cut_tensor_with_huge_dimensions_is_422(edge_serving: EdgeServing) -> None:
    """Was a 500 (torch: "Stride calculation overflowed") on forward and backward."""
    edge = edge_serving
    empty = TensorPayload.model_construct(dtype="float32", shape=(0, 2**62, HIDDEN), data=b"")
    mask = TensorPayload.model_construct(dtype="uint8", shape=(0, 2**62), data=b"")
    forward = ForwardRequest.model_construct(
        session_id=edge.session_id, step=0, activations=empty, attention_mask=mask
    )
    before = edge.snapshot()
    assert_error(edge.post("forward", frames(forward)), 422, "bad_tensor")  # type: ignore[arg-type]
    assert edge.snapshot() == before
    assert edge.post("forward", frames(edge.forward_request())).status_code == 200
    backward = BackwardRequest.model_construct(session_id=edge.session_id, step=0, grad=empty)
    before = edge.snapshot()
    assert_error(edge.post("backward", frames(backward)), 422, "bad_tensor")  # type: ignore[arg-type]
    assert edge.snapshot() == before
    assert edge.post("backward", frames(edge.backward_request())).status_code == 200


def test_an_update_its_edge_round_cannot_aggregate_is_refused_and_not_kept(edge_serving: EdgeServing) -> None:
    """Was a 422 that kept the submission: edge round 1's merged sketch (edge round 0's plus
    this one) overflows fp16, and the device's corrected update was then refused as a replay."""
    edge = edge_serving
    large = encode(scaled_tables(edge.update(), 6e4))  # finite in fp16, but not twice over
    assert edge.post("updates", large, "?edge_round=0").status_code == 200
    before = edge.snapshot()
    refused = edge.post("updates", large, "?edge_round=1")
    assert_error(refused, 422, "bad_tensor", mentions="overflows fp16")  # type: ignore[arg-type]
    assert edge.snapshot() == before
    assert edge.post("updates", encode(edge.update()), "?edge_round=1").status_code == 200
    model = edge.client.get(
        f"/v1/sessions/{edge.session_id}/model", params={"edge_round": 1, "wait_s": 0}, headers=edge.device
    )
    assert model.status_code == 200
