"""Cloud: edge model uploads (every bad input leaves the round as it was), global versions,
device reports."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import msgpack
import pytest
import torch

from elsa.infra.web import token_hash
from elsa.runtime.config import parse_config
from elsa.runtime.exchange import read_broadcast
from elsa.runtime.rounds import EXACT
from elsa.sketch import (
    apply_sketches,
    sketch_state,
    sketches_from_payloads,
    sketches_to_payloads,
    state_geometries,
)
from elsa.wire import AdapterBroadcast, AdapterUpdate, TensorPayload, decode, encode, from_payload, to_payload

from .conftest import ADMIN_TOKEN, MAX_BODY, Cloud, Collecting, run_config, start_collecting, wait_for_task
from .support import assert_error, bearer

pytestmark = pytest.mark.anyio

MSGPACK = {"content-type": "application/msgpack"}


CONFIG = parse_config(run_config())


def run_start(c: Collecting) -> dict[str, torch.Tensor]:
    """The run's initial adapter (version 0), from the model the cloud loaded for the run."""
    model, _ = c.cloud.app.state.cloud.models[c.run_id]
    return model.initial_state()


def edge_delta(c: Collecting, scale: float = 0.01) -> dict[str, torch.Tensor]:
    """A model delta over every adapter key of the run, as an edge would send it."""
    g = torch.Generator().manual_seed(0)
    return {k: torch.randn(v.shape, generator=g) * scale for k, v in run_start(c).items()}


def update(
    c: Collecting,
    *,
    delta: dict[str, torch.Tensor] | None = None,
    sketch_round: int | None = None,
    seed: int = CONFIG.seed,
    **fields: Any,
) -> AdapterUpdate:
    """An edge's sketched upload (geometry of ``sketch_round``, default the update's round)."""
    round_index = int(fields.get("round", 1))
    changes = delta if delta is not None else edge_delta(c)
    sketches = sketch_state(changes, CONFIG.sketch_params(), sketch_round or round_index, seed)
    values: dict[str, Any] = {
        "node_id": c.edge_id,
        "run_id": c.run_id,
        "round": 1,
        "num_examples": 10,
        "sketches": sketches_to_payloads(sketches),
        **fields,
    }
    return AdapterUpdate(**values)


async def upload(
    c: Collecting, body: bytes, *, round_index: int = 1, headers: dict[str, str] | None = None
) -> httpx.Response:
    return await c.cloud.client.post(
        f"/v1/runs/{c.run_id}/rounds/{round_index}/edge-models",
        content=body,
        headers={**MSGPACK, **(c.edge if headers is None else headers)},
    )


async def test_a_round_hands_out_serve_and_train_tasks(collecting: Collecting) -> None:
    cloud, run_id = collecting.cloud, collecting.run_id
    device_id = collecting.devices[0][0]
    serve = await wait_for_task(cloud, collecting.edge, "serve", run_id, 1)
    train = await wait_for_task(cloud, collecting.device, "train", run_id, 1)
    assert serve["devices"] == ["device-000"] and serve["version"] == 0
    assert serve["config"]["topology"]["edges"] == 1 and serve["config"]["topology"]["devices_per_edge"] == 1
    assert train["edge_id"] == collecting.edge_id and train["edge_url"] == "http://edge-0.invalid:8100"
    assert serve["session_token_hashes"] == {"device-000": token_hash(train["session_token"])}
    # nothing newer: an immediate idle that keeps the sequence number
    polled = await cloud.client.get(
        "/v1/tasks/next", params={"after": 0, "wait_s": 0}, headers=collecting.device
    )
    seq = polled.headers["x-elsa-task-seq"]
    again = await cloud.client.get(
        "/v1/tasks/next", params={"after": seq, "wait_s": 0}, headers=collecting.device
    )
    assert again.json()["kind"] == "idle" and again.headers["x-elsa-task-seq"] == seq

    assignment = (await cloud.client.get(f"/v1/runs/{run_id}/assignments", headers=cloud.admin)).json()
    assert assignment == {"run_id": run_id, "assignment": {device_id: collecting.edge_id}}
    (round_1,) = (await cloud.client.get(f"/v1/runs/{run_id}/rounds", headers=cloud.admin)).json()
    assert round_1["round"] == 1 and round_1["state"] == "training" and round_1["version"] is None
    assert round_1["participants"] == 1
    events = (await cloud.client.get(f"/v1/runs/{run_id}/events", headers=cloud.admin)).json()
    assert [e["kind"] for e in events] == ["round_started"]
    run = (await cloud.client.get(f"/v1/runs/{run_id}", headers=cloud.admin)).json()
    assert run["state"] == "running" and run["current_round"] == 1


def _with_table(c: Collecting, table: TensorPayload) -> bytes:
    good = update(c)
    key = sorted(good.sketches)[0]
    bad = good.sketches[key].model_copy(update={"table": table})
    return encode(good.model_copy(update={"sketches": {**good.sketches, key: bad}}))


def _nan_table(c: Collecting) -> bytes:
    shape = update(c).sketches[sorted(update(c).sketches)[0]].table.shape
    return _with_table(c, to_payload(torch.full(tuple(shape), float("nan")), "fp32"))


def _inconsistent_payload(c: Collecting) -> bytes:
    return _with_table(c, TensorPayload.model_construct(dtype="float32", shape=(3, 3), data=b"\x00" * 8))


def _oversized(c: Collecting) -> bytes:
    big = {"blocks.0.attention.self.query.lora_A.weight": torch.zeros(MAX_BODY // 4 + 16)}
    sketches = sketch_state(big, EXACT, 1, 0)  # one dense table larger than the body limit
    return encode(update(c).model_copy(update={"sketches": sketches_to_payloads(sketches)}))


BAD_UPLOADS: dict[str, tuple[Any, int, str, str]] = {
    # name: (body builder, status, error code, a word of the detail)
    "not msgpack": (lambda c: b"\x00\xffnot msgpack at all", 400, "decode_error", ""),
    "empty body": (lambda c: b"", 400, "decode_error", ""),
    "msgpack of another shape": (
        lambda c: msgpack.packb({"k": "adapter_update", "v": 1}),
        400,
        "decode_error",
        "",
    ),
    "another message kind": (
        lambda c: encode(AdapterBroadcast(run_id=c.run_id, round=1, version=1)),
        400,
        "decode_error",
        "",
    ),
    "wrong run in body": (lambda c: encode(update(c, run_id="other-run")), 409, "conflict", "run"),
    "wrong round in body": (lambda c: encode(update(c, round=2)), 409, "conflict", "round"),
    "another node's model": (lambda c: encode(update(c, node_id="edge-other")), 403, "forbidden", "own"),
    "nan table": (_nan_table, 422, "bad_tensor", "NaN"),
    "inconsistent table": (_inconsistent_payload, 422, "bad_tensor", "bytes"),
    "key the model does not have": (
        lambda c: encode(update(c, delta={**edge_delta(c), "weird.key": torch.zeros(2)})),
        409,
        "adapter_mismatch",
        "weird.key",
    ),
    "sketch of another round": (
        lambda c: encode(update(c, sketch_round=2)),
        409,
        "geometry_mismatch",
        "round",
    ),
    "sketch of another run seed": (lambda c: encode(update(c, seed=99)), 409, "geometry_mismatch", "seed"),
    "no sketches": (lambda c: encode(update(c, delta={})), 409, "adapter_mismatch", "no sketches"),
    "oversized body": (_oversized, 413, "payload_too_large", "limit"),
}


async def test_bad_uploads_are_refused_and_change_nothing(collecting: Collecting) -> None:
    cloud = collecting.cloud
    before = await cloud.snapshot(collecting.run_id)
    for case, (build, status, code, word) in BAD_UPLOADS.items():
        response = await upload(collecting, build(collecting))
        assert response.status_code == status, (case, response.text)
        assert_error(response, status, code, mentions=word or None)
        assert cloud.app.state.cloud.uploads[(collecting.run_id, 1)] == {}, case
        assert await cloud.snapshot(collecting.run_id) == before, case
        assert await cloud.healthy(), case
    # the round still accepts the edge's valid model afterwards
    assert (await upload(collecting, encode(update(collecting)))).status_code == 200


async def test_upload_authentication(collecting: Collecting) -> None:
    body = encode(update(collecting))
    assert_error(await upload(collecting, body, headers={}), 401, "unauthorized")
    assert_error(await upload(collecting, body, headers=bearer("nope")), 401, "unauthorized")
    assert_error(await upload(collecting, body, headers=bearer(ADMIN_TOKEN)), 401, "unauthorized")
    assert_error(
        await upload(collecting, body, headers=collecting.device), 403, "forbidden", mentions="edges"
    )
    assert collecting.cloud.app.state.cloud.uploads[(collecting.run_id, 1)] == {}


async def test_upload_for_a_round_not_collecting_is_409(collecting: Collecting) -> None:
    before = await collecting.cloud.snapshot(collecting.run_id)
    body = encode(update(collecting, round=2))
    assert_error(await upload(collecting, body, round_index=2), 409, "conflict", mentions="not collecting")
    other = encode(update(collecting, run_id="no-such-run"))
    response = await collecting.cloud.client.post(
        "/v1/runs/no-such-run/rounds/1/edge-models", content=other, headers={**MSGPACK, **collecting.edge}
    )
    assert_error(response, 409, "conflict", mentions="not collecting")
    assert await collecting.cloud.snapshot(collecting.run_id) == before


async def test_replay_and_mismatched_models_are_409(cloud: Cloud) -> None:
    c = await start_collecting(cloud, edges=2)
    assert (await upload(c, encode(update(c)))).status_code == 200
    replay = await upload(c, encode(update(c)))
    assert_error(replay, 409, "conflict", mentions="already uploaded")
    second_id, second = c.edges[1]
    mismatch = await upload(c, encode(update(c, node_id=second_id, sketch_round=7)), headers=second)
    assert_error(mismatch, 409, "geometry_mismatch")
    uploads = cloud.app.state.cloud.uploads[(c.run_id, 1)]
    assert set(uploads) == {c.edge_id}
    rounds = (await cloud.client.get(f"/v1/runs/{c.run_id}/rounds", headers=cloud.admin)).json()
    assert [r["state"] for r in rounds] == ["training"]


async def _wait_for_round(cloud: Cloud, run_id: str, state: str) -> list[dict[str, Any]]:
    with anyio.fail_after(20):
        while True:
            rounds: list[dict[str, Any]] = (
                await cloud.client.get(f"/v1/runs/{run_id}/rounds", headers=cloud.admin)
            ).json()
            if rounds and rounds[-1]["state"] == state:
                return rounds
            await anyio.sleep(0.05)


async def test_valid_upload_commits_a_global_version(collecting: Collecting) -> None:
    cloud, run_id = collecting.cloud, collecting.run_id
    sent = edge_delta(collecting, scale=0.05)
    message = update(collecting, delta=sent)
    body = encode(message)
    start = run_start(collecting)
    expected = apply_sketches(
        start,
        sketches_from_payloads(
            message.sketches,
            state_geometries(
                {k: v.numel() for k, v in start.items()}, CONFIG.sketch_params(), 1, CONFIG.seed
            ),
        ),
        CONFIG.sketch_params(),
    )
    ack = await upload(collecting, body)
    assert ack.status_code == 200 and ack.json() == {"ok": True, "detail": ""}

    rounds = await _wait_for_round(cloud, run_id, "completed")
    assert rounds[-1]["round"] == 1 and rounds[-1]["version"] == 1
    metrics = (await cloud.client.get(f"/v1/runs/{run_id}/metrics", headers=cloud.admin)).json()
    assert metrics["rounds"][0]["bytes"]["adapters_edge_to_cloud"] == len(body)

    got = await cloud.client.get(f"/v1/runs/{run_id}/adapters/1", headers=collecting.edge)
    assert got.status_code == 200 and got.headers["content-type"] == "application/msgpack"
    broadcast = decode(got.content, AdapterBroadcast)
    assert broadcast.run_id == run_id and broadcast.version == 1
    assert sorted(broadcast.tensors) == sorted(sent)
    for key, tensor in expected.items():
        assert torch.equal(from_payload(broadcast.tensors[key], dtype=torch.float32), tensor), key
    # nodes holding version 0 rebuild version 1 bit for bit from the merged sketch
    delta = await cloud.client.get(f"/v1/runs/{run_id}/adapters/1/delta", headers=collecting.device)
    assert delta.status_code == 200 and len(delta.content) < len(got.content) / 4
    rebuilt = read_broadcast(
        decode(delta.content, AdapterBroadcast), start, CONFIG.sketch_params(), CONFIG.seed
    )
    assert all(torch.equal(rebuilt[k], expected[k]) for k in expected)
    assert_error(
        await cloud.client.get(f"/v1/runs/{run_id}/adapters/2/delta", headers=collecting.edge),
        404,
        "not_found",
    )

    key = sorted(sent)[0]
    subset = await cloud.client.get(
        f"/v1/runs/{run_id}/adapters/1", params={"keys": key}, headers=cloud.admin
    )
    assert subset.status_code == 200 and list(decode(subset.content, AdapterBroadcast).tensors) == [key]
    unknown_key = await cloud.client.get(
        f"/v1/runs/{run_id}/adapters/1", params={"keys": "no.such.key"}, headers=collecting.device
    )
    assert_error(unknown_key, 404, "not_found", mentions="no.such.key")
    assert_error(
        await cloud.client.get(f"/v1/runs/{run_id}/adapters/2", headers=collecting.edge), 404, "not_found"
    )
    assert_error(await cloud.client.get(f"/v1/runs/{run_id}/adapters/1"), 401, "unauthorized")
    assert_error(
        await cloud.client.get(f"/v1/runs/{run_id}/adapters/1", headers=bearer("nope")), 401, "unauthorized"
    )

    for filename in ("adapter_config.json", "adapter_model.safetensors"):
        peft = await cloud.client.get(f"/v1/runs/{run_id}/adapters/1/peft/{filename}", headers=cloud.admin)
        assert peft.status_code == 200 and len(peft.content) > 0
    assert_error(
        await cloud.client.get(f"/v1/runs/{run_id}/adapters/1/peft/elsa.db", headers=cloud.admin),
        404,
        "not_found",
    )
    assert_error(
        await cloud.client.get(f"/v1/runs/{run_id}/adapters/9/peft/adapter_config.json", headers=cloud.admin),
        404,
        "not_found",
    )

    # the round is closed: a late upload is refused
    assert_error(await upload(collecting, body), 409, "conflict", mentions="not collecting")
    # the run completes once its device has reported the last round
    assert (await post_report(collecting, report(collecting))).status_code == 200
    with anyio.fail_after(10):
        while (await cloud.client.get(f"/v1/runs/{run_id}", headers=cloud.admin)).json()[
            "state"
        ] != "completed":
            await anyio.sleep(0.05)


async def test_model_that_does_not_fit_the_global_version_is_409(cloud: Cloud) -> None:
    edge_id, edge = await cloud.join("edge", "edge-0", url="http://edge-0.invalid:8100")
    _, device = await cloud.join("device", "device-000")
    run_id = (await cloud.create_run(run_config(cloud_rounds=2)))["run_id"]
    c = Collecting(cloud, run_id, [(edge_id, edge)], [("", device)])
    await wait_for_task(cloud, device, "train", run_id, 1)
    assert (await upload(c, encode(update(c)))).status_code == 200
    await wait_for_task(cloud, device, "train", run_id, 2)
    uploads = cloud.app.state.cloud.uploads
    before = await cloud.snapshot(run_id)
    delta = edge_delta(c)
    key = sorted(delta)[0]
    resized = {**delta, key: torch.zeros(delta[key].numel() + 1)}
    for wrong in (update(c, round=2, delta=resized), update(c, round=2, sketch_round=1)):
        response = await upload(c, encode(wrong), round_index=2)
        assert_error(response, 409, "geometry_mismatch", mentions=key)
    assert uploads[(run_id, 2)] == {}
    assert await cloud.snapshot(run_id) == before
    assert (await upload(c, encode(update(c, round=2)), round_index=2)).status_code == 200


def report(c: Collecting, **fields: Any) -> dict[str, Any]:
    return {
        "run_id": c.run_id,
        "round": 1,
        "metrics": {"loss": 0.5, "accuracy": 0.75},
        "bytes": {"activations": 100},
        **fields,
    }


async def post_report(
    c: Collecting, body: Any, *, round_index: int = 1, headers: dict[str, str] | None = None
) -> httpx.Response:
    url = f"/v1/runs/{c.run_id}/rounds/{round_index}/reports"
    auth = c.device if headers is None else headers
    if isinstance(body, bytes):
        return await c.cloud.client.post(
            url, content=body, headers={"content-type": "application/json", **auth}
        )
    return await c.cloud.client.post(url, json=body, headers=auth)


async def test_valid_report_is_visible_in_metrics(collecting: Collecting) -> None:
    response = await post_report(collecting, report(collecting))
    assert response.status_code == 200 and response.json()["ok"] is True
    metrics = (
        await collecting.cloud.client.get(
            f"/v1/runs/{collecting.run_id}/metrics", headers=collecting.cloud.admin
        )
    ).json()
    assert metrics["run_id"] == collecting.run_id
    (round_1,) = metrics["rounds"]
    assert round_1["round"] == 1 and round_1["reports"] == 1
    assert round_1["metrics"] == {"accuracy": 0.75, "loss": 0.5}
    assert round_1["bytes"] == {"activations": 100}


BAD_REPORTS: dict[str, tuple[Any, dict[str, Any], int, str]] = {
    # name: (body builder, post kwargs, status, code)
    "unknown round": (lambda c: report(c, round=7), {"round_index": 7}, 404, "not_found"),
    "round differs from URL": (lambda c: report(c, round=2), {}, 409, "conflict"),
    "run differs from URL": (lambda c: report(c, run_id="other-run"), {}, 409, "conflict"),
    "negative byte count": (
        lambda c: report(c, bytes={"activations": 5, "gradients": -1}),
        {},
        422,
        "invalid_request",
    ),
    "nan metric": (
        lambda c: b'{"run_id": "%s", "round": 1, "metrics": {"loss": NaN}}' % c.run_id.encode(),
        {},
        422,
        "invalid_config",
    ),
    "byte kind too long": (lambda c: report(c, bytes={"k" * 65: 1}), {}, 422, "invalid_request"),
    "metric name too long": (lambda c: report(c, metrics={"m" * 200: 1.0}), {}, 422, "invalid_config"),
    "not json": (lambda c: b"{nope", {}, 422, "invalid_request"),
    "unknown field": (lambda c: report(c, extra=1), {}, 422, "invalid_request"),
    "bad round": (lambda c: report(c, round=-1), {"round_index": -1}, 422, "invalid_request"),
}


async def test_bad_reports_are_refused_and_record_nothing(collecting: Collecting) -> None:
    before = await collecting.cloud.snapshot(collecting.run_id)
    for case, (build, kwargs, status, code) in BAD_REPORTS.items():
        response = await post_report(collecting, build(collecting), **kwargs)
        assert response.status_code == status, (case, response.text)
        assert_error(response, status, code)
        assert await collecting.cloud.snapshot(collecting.run_id) == before, case
        assert await collecting.cloud.healthy(), case
    assert (await post_report(collecting, report(collecting))).status_code == 200


async def test_replayed_report_is_409_and_counts_once(collecting: Collecting) -> None:
    assert (await post_report(collecting, report(collecting))).status_code == 200
    after_first = await collecting.cloud.snapshot(collecting.run_id)
    replay = await post_report(collecting, report(collecting, metrics={"loss": 9.0}))
    assert_error(replay, 409, "conflict", mentions="already reported")
    assert await collecting.cloud.snapshot(collecting.run_id) == after_first
    assert after_first["metrics"]["rounds"][0]["bytes"] == {"activations": 100}


async def test_report_authentication(collecting: Collecting) -> None:
    before = await collecting.cloud.snapshot(collecting.run_id)
    body = report(collecting)
    assert_error(await post_report(collecting, body, headers={}), 401, "unauthorized")
    assert_error(await post_report(collecting, body, headers=bearer(ADMIN_TOKEN)), 401, "unauthorized")
    assert_error(
        await post_report(collecting, body, headers=collecting.edge), 403, "forbidden", mentions="devices"
    )
    _, stranger = await collecting.cloud.join("device", "device-999")
    assert_error(await post_report(collecting, body, headers=stranger), 403, "forbidden", mentions="assigned")
    assert await collecting.cloud.snapshot(collecting.run_id) == before


async def test_report_for_unknown_run_is_404(cloud: Cloud) -> None:
    _, device = await cloud.join("device", "device-000")
    response = await cloud.client.post(
        "/v1/runs/no-such-run/rounds/1/reports", json={"run_id": "no-such-run", "round": 1}, headers=device
    )
    assert_error(response, 404, "not_found")
