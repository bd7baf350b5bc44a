"""Cloud: devices' probe reports (DESIGN §2.3, §2.5) — every bad input refused with a clear error
and nothing recorded — and the operator's view of the control plane (DESIGN §2.3-§2.6)."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import msgpack
import numpy as np
import pytest
import torch

from elsa.runtime.config import RunConfig, parse_config
from elsa.sketch import sketch_state, sketches_to_payloads
from elsa.wire import AdapterBroadcast, AdapterUpdate, ProbeReport, TensorPayload, encode, to_payload
from elsa.wire.control import ControlView

from .conftest import ADMIN_TOKEN, MAX_BODY, Cloud, Collecting, run_config, wait_for_task
from .support import assert_error, bearer

pytestmark = pytest.mark.anyio

MSGPACK = {"content-type": "application/msgpack"}
NUM_PROBES = 16  # the runs' control.num_probes: the number of prediction rows a report must have
CLASSES = 3
K = 4  # the runs' control.basis_dim: the fingerprints' dimension


async def start_probing(cloud: Cloud, devices: int = 1) -> Collecting:
    """``devices`` edges and devices joined; round 1 of a run with small probe reports collects."""
    joined_edges = [
        await cloud.join("edge", f"edge-{i}", url=f"http://edge-{i}.invalid:8100") for i in range(devices)
    ]
    joined_devices = [await cloud.join("device", f"device-{i:03d}") for i in range(devices)]
    config = run_config()
    config["topology"] = {"edges": devices, "devices_per_edge": 1}
    config["control"] = {"num_probes": NUM_PROBES, "basis_dim": K}
    run_id = (await cloud.create_run(config))["run_id"]
    for _, auth in joined_devices:
        task = await wait_for_task(cloud, auth, "train", run_id, 1)
        assert task["fingerprint"] is True  # the first round is a fingerprint round
    return Collecting(cloud, run_id, joined_edges, joined_devices)


@pytest.fixture
async def probing(cloud: Cloud) -> Collecting:
    """One edge and one device; round 1 of a run with ``num_probes = NUM_PROBES`` collects."""
    return await start_probing(cloud)


async def config_of(c: Collecting) -> RunConfig:
    """The run's configuration, as the cloud stores the run."""
    run = (await c.cloud.client.get(f"/v1/runs/{c.run_id}", headers=c.cloud.admin)).json()
    return parse_config(run["config"])


async def num_probes_of(c: Collecting) -> int:
    """The run's configured number of probes, as the cloud stores the run."""
    return (await config_of(c)).control.num_probes


def distributions(rows: int = NUM_PROBES, classes: int = CLASSES, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(classes), size=rows)


def payload(array: np.ndarray) -> TensorPayload:
    return to_payload(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64)), "fp32")


def probes(
    c: Collecting,
    *,
    device: int = 0,
    predictions: np.ndarray | None = None,
    fingerprint: bool = True,
    **fields: Any,
) -> ProbeReport:
    """A device's probe report for round 1 (with a fingerprint N(0, I) unless told otherwise)."""
    values: dict[str, Any] = {
        "node_id": c.devices[device][0],
        "run_id": c.run_id,
        "round": 1,
        "predictions": payload(distributions() if predictions is None else predictions),
    }
    if fingerprint:
        values |= {"mu": payload(np.zeros(K)), "sigma": payload(np.eye(K))}
    return ProbeReport(**(values | fields))


async def post_probes(
    c: Collecting,
    body: bytes,
    *,
    round_index: int = 1,
    run_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return await c.cloud.client.post(
        f"/v1/runs/{run_id or c.run_id}/rounds/{round_index}/probes",
        content=body,
        headers={**MSGPACK, **(c.device if headers is None else headers)},
    )


def received(c: Collecting, round_index: int = 1) -> dict[str, Any]:
    """The probe reports the cloud holds for a round in progress."""
    got: dict[str, Any] = c.cloud.app.state.cloud.probes[(c.run_id, round_index)]
    return got


async def test_valid_report_is_accepted_once(probing: Collecting) -> None:
    c = probing
    assert await num_probes_of(c) == NUM_PROBES
    sent = distributions(seed=1)
    body = encode(probes(c, predictions=sent))
    ack = await post_probes(c, body)
    assert ack.status_code == 200, ack.text
    assert ack.json() == {"ok": True, "detail": ""}
    (name,) = received(c)
    assert name == "device-000"
    result = received(c)[name]
    np.testing.assert_allclose(result.predictions, sent, atol=1e-6)
    assert result.fingerprint is not None and result.fingerprint.dim == K
    np.testing.assert_allclose(result.fingerprint.sigma, np.eye(K))
    metrics = (await c.cloud.client.get(f"/v1/runs/{c.run_id}/metrics", headers=c.cloud.admin)).json()
    assert metrics["rounds"][0]["bytes"]["probe_reports"] == len(body)

    before = await c.cloud.snapshot(c.run_id)
    replay = await post_probes(c, encode(probes(c, predictions=distributions(seed=2))))
    assert_error(replay, 409, "conflict", mentions="already reported")
    np.testing.assert_allclose(received(c)[name].predictions, sent, atol=1e-6)
    assert await c.cloud.snapshot(c.run_id) == before


def _nan_predictions() -> np.ndarray:
    bad = distributions()
    bad[2, 0] = float("nan")
    return bad


def _negative_predictions() -> np.ndarray:
    bad = distributions()
    bad[0] = [-0.2, 0.7, 0.5]  # sums to 1
    return bad


def _inconsistent_payload(c: Collecting) -> bytes:
    bad = TensorPayload.model_construct(dtype="float32", shape=(NUM_PROBES, CLASSES), data=b"\x00" * 8)
    return encode(probes(c).model_copy(update={"predictions": bad}))


def _oversized(c: Collecting) -> bytes:
    rows = MAX_BODY // (4 * CLASSES) + 16
    return encode(probes(c, predictions=distributions(rows=rows)))


BAD_REPORTS: dict[str, tuple[Any, int, str, str]] = {
    # name: (body builder, status, error code, a word of the detail)
    "not msgpack": (lambda c: b"\x00\xffnot msgpack at all", 400, "decode_error", ""),
    "empty body": (lambda c: b"", 400, "decode_error", ""),
    "msgpack of another shape": (
        lambda c: msgpack.packb({"k": "probe_report", "v": 1}),
        400,
        "decode_error",
        "",
    ),
    "another message kind": (
        lambda c: encode(AdapterBroadcast(run_id=c.run_id, round=1, version=1, tensors={})),
        400,
        "decode_error",
        "",
    ),
    "an edge model": (
        lambda c: encode(
            AdapterUpdate(node_id=c.devices[0][0], run_id=c.run_id, round=1, num_examples=1, sketches={})
        ),
        400,
        "decode_error",
        "",
    ),
    "wrong run in body": (lambda c: encode(probes(c, run_id="other-run")), 409, "conflict", "run"),
    "wrong round in body": (lambda c: encode(probes(c, round=2)), 409, "conflict", "round"),
    "another device's node id": (lambda c: encode(probes(c, node_id="device-999")), 403, "forbidden", "own"),
    "one probe short": (
        lambda c: encode(probes(c, predictions=distributions(rows=NUM_PROBES - 1))),
        422,
        "invalid_config",
        "predictions",
    ),
    "one probe too many": (
        lambda c: encode(probes(c, predictions=distributions(rows=NUM_PROBES + 1))),
        422,
        "invalid_config",
        "predictions",
    ),
    "a vector of predictions": (
        lambda c: encode(probes(c, predictions=np.full(NUM_PROBES, 1.0 / NUM_PROBES))),
        422,
        "invalid_config",
        "predictions",
    ),
    "one class": (
        lambda c: encode(probes(c, predictions=np.ones((NUM_PROBES, 1)))),
        422,
        "invalid_config",
        "predictions",
    ),
    "rows that do not sum to 1": (
        lambda c: encode(probes(c, predictions=distributions() * 1.1)),
        422,
        "invalid_config",
        "sum to 1",
    ),
    "negative predictions": (
        lambda c: encode(probes(c, predictions=_negative_predictions())),
        422,
        "invalid_config",
        ">= 0",
    ),
    "nan predictions": (
        lambda c: encode(probes(c, predictions=_nan_predictions())),
        422,
        "bad_tensor",
        "NaN",
    ),
    "inconsistent tensor": (_inconsistent_payload, 422, "bad_tensor", "bytes"),
    "mu without sigma": (
        lambda c: encode(probes(c, fingerprint=False, mu=payload(np.zeros(K)))),
        422,
        "invalid_config",
        "both",
    ),
    "sigma of another size": (
        lambda c: encode(probes(c, sigma=payload(np.eye(K + 1)))),
        422,
        "invalid_config",
        "sigma",
    ),
    "sigma not positive definite": (
        lambda c: encode(probes(c, sigma=payload(-np.eye(K)))),
        422,
        "invalid_config",
        "positive definite",
    ),
    "oversized body": (_oversized, 413, "payload_too_large", "limit"),
}


async def test_bad_reports_are_refused_and_change_nothing(probing: Collecting) -> None:
    c = probing
    before = await c.cloud.snapshot(c.run_id)
    for case, (build, status, code, word) in BAD_REPORTS.items():
        response = await post_probes(c, build(c))
        assert response.status_code == status, (case, response.text)
        assert_error(response, status, code, mentions=word or None)
        assert received(c) == {}, case
        assert await c.cloud.snapshot(c.run_id) == before, case
        assert await c.cloud.healthy(), case
    # the round still accepts the device's valid report afterwards
    assert (await post_probes(c, encode(probes(c)))).status_code == 200
    assert list(received(c)) == ["device-000"]


async def test_a_report_for_a_round_not_collecting_is_409(probing: Collecting) -> None:
    c = probing
    before = await c.cloud.snapshot(c.run_id)
    later = await post_probes(c, encode(probes(c, round=2)), round_index=2)
    assert_error(later, 409, "conflict", mentions="not collecting")
    other = await post_probes(c, encode(probes(c, run_id="no-such-run")), run_id="no-such-run")
    assert_error(other, 409, "conflict", mentions="not collecting")
    assert received(c) == {}
    assert await c.cloud.snapshot(c.run_id) == before


async def test_probe_report_authentication(probing: Collecting) -> None:
    c = probing
    body = encode(probes(c))
    assert_error(await post_probes(c, body, headers={}), 401, "unauthorized")
    assert_error(await post_probes(c, body, headers=bearer("nope")), 401, "unauthorized")
    assert_error(await post_probes(c, body, headers=bearer(ADMIN_TOKEN)), 401, "unauthorized")
    assert_error(await post_probes(c, body, headers=c.edge), 403, "forbidden", mentions="devices")
    # a joined device that is not in this round, reporting as itself
    stranger_id, stranger = await c.cloud.join("device", "device-999")
    own = encode(probes(c, node_id=stranger_id))
    assert_error(await post_probes(c, own, headers=stranger), 403, "forbidden", mentions="assigned")
    # ... or as the assigned device
    assert_error(await post_probes(c, body, headers=stranger), 403, "forbidden", mentions="own")
    assert received(c) == {}


async def test_a_device_may_name_itself_by_name(probing: Collecting) -> None:
    response = await post_probes(probing, encode(probes(probing, node_id="device-000")))
    assert response.status_code == 200, response.text
    assert list(received(probing)) == ["device-000"]


async def test_reports_of_one_round_must_agree_in_shape(cloud: Cloud) -> None:
    c = await start_probing(cloud, devices=2)
    assert (await post_probes(c, encode(probes(c, device=0)))).status_code == 200
    wider = encode(probes(c, device=1, predictions=distributions(classes=CLASSES + 1)))
    assert_error(
        await post_probes(c, wider, headers=c.devices[1][1]), 409, "adapter_mismatch", mentions="shape"
    )
    assert list(received(c)) == ["device-000"]


async def test_fingerprints_must_have_the_runs_basis_dimension(cloud: Cloud) -> None:
    """Fingerprints of different dimensions cannot be compared (symmetric KL needs one k); the
    run fixes k = control.basis_dim, so a report of another k is refused when it arrives, not
    when the cloud clusters at the end of the round."""
    c = await start_probing(cloud, devices=2)
    assert (await post_probes(c, encode(probes(c, device=0)))).status_code == 200
    other_k = probes(c, device=1, mu=payload(np.zeros(K + 1)), sigma=payload(np.eye(K + 1)))
    response = await post_probes(c, encode(other_k), headers=c.devices[1][1])
    assert 400 <= response.status_code < 500, response.text
    assert list(received(c)) == ["device-000"]


# --- the operator's view of the control plane ---------------------------------------------------


async def edge_model(c: Collecting, edge: int) -> bytes:
    """A valid edge model for round 1: the sketches, in the round's geometry, of a small delta
    over every adapter key of the model the cloud loaded for the run."""
    config = await config_of(c)
    model, _ = c.cloud.app.state.cloud.models[c.run_id]
    g = torch.Generator().manual_seed(edge)
    delta = {k: torch.randn(v.shape, generator=g) * 0.01 for k, v in model.initial_state().items()}
    sketches = sketch_state(delta, config.sketch_params(), 1, config.seed)
    return encode(
        AdapterUpdate(
            node_id=c.edges[edge][0],
            run_id=c.run_id,
            round=1,
            num_examples=10,
            sketches=sketches_to_payloads(sketches),
        )
    )


async def get_control(c: Collecting, headers: dict[str, str]) -> httpx.Response:
    return await c.cloud.client.get(f"/v1/runs/{c.run_id}/control", headers=headers)


async def test_control_view_needs_the_admin_token(probing: Collecting) -> None:
    c = probing
    assert_error(await get_control(c, {}), 401, "unauthorized")
    assert_error(await get_control(c, c.device), 403, "forbidden")
    assert_error(await get_control(c, c.edge), 403, "forbidden")
    unknown = await c.cloud.client.get("/v1/runs/no-such-run/control", headers=c.cloud.admin)
    assert_error(unknown, 404, "not_found")


async def test_control_view_shows_the_round_plan_then_what_the_reports_changed(cloud: Cloud) -> None:
    c = await start_probing(cloud, devices=2)
    response = await get_control(c, cloud.admin)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == set(ControlView.model_fields)
    view = ControlView.model_validate(body)
    assert view.run_id == c.run_id and view.round == 0
    # devices by name, edges by name; no fingerprint yet: no clusters, no trust
    assert sorted(view.assignment) == ["device-000", "device-001"]
    assert set(view.assignment.values()) <= {"edge-0", "edge-1"}
    assert view.split_plans == {"device-000": (1, 1), "device-001": (1, 1)}  # the configured cut
    assert view.clusters == {} and view.trust == {} and view.quarantined == []

    # both devices behave alike; both edges upload; the round commits and the cloud observes
    for i in range(2):
        report = encode(probes(c, device=i, predictions=distributions(seed=7)))
        assert (await post_probes(c, report, headers=c.devices[i][1])).status_code == 200
    for i in range(2):
        response = await cloud.client.post(
            f"/v1/runs/{c.run_id}/rounds/1/edge-models",
            content=await edge_model(c, i),
            headers={**MSGPACK, **c.edges[i][1]},
        )
        assert response.status_code == 200, response.text
    # the view reads Redis (mirrored after the SQL snapshot) field by field, falling back to SQL:
    # while the round commits it may show trust a moment before clusters; wait for both
    with anyio.fail_after(20):
        while True:
            view = ControlView.model_validate((await get_control(c, cloud.admin)).json())
            if view.trust and view.clusters:
                break
            await anyio.sleep(0.05)
    assert view.round == 1
    # two alike devices form one cluster (ids start at 1) and agree fully: trust 1, no quarantine
    assert view.clusters == {"device-000": 1, "device-001": 1}
    assert view.trust == pytest.approx({"device-000": 1.0, "device-001": 1.0})
    assert view.quarantined == []
