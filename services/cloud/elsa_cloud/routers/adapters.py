"""Adapters and reports: edge models in, global versions out, device metrics (DESIGN §2.9)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response

from elsa.errors import (
    AdapterMismatchError,
    AuthError,
    ConflictError,
    ForbiddenError,
    ModelError,
    NotFoundError,
)
from elsa.infra.web import ERROR_RESPONSES, bearer_token, msgpack_response, read_body, same_secret, token_hash
from elsa.model.packaged import model_type_of
from elsa.model.peft_format import peft_key
from elsa.runtime.config import RunConfig, parse_config
from elsa.runtime.control import probe_result
from elsa.runtime.exchange import read_update
from elsa.wire import (
    AdapterBroadcast,
    AdapterUpdate,
    ProbeReport,
    decode,
    encode,
    state_to_payloads,
)
from elsa.wire.control import Ack, MetricsReport
from elsa_cloud.deps import DeviceDep, EdgeDep, SettingsDep, StateDep
from elsa_cloud.routers.runs import IndexPath, RunIdPath
from elsa_cloud.workflows.coordinator import now
from elsa_cloud.workflows.vault import global_state, load_delta, start_model, version_dir

router = APIRouter(prefix="/v1/runs/{run_id}", tags=["adapters"], responses=ERROR_RESPONSES)


@router.get(
    "/adapters/{version}",
    summary="A global adapter version (msgpack AdapterBroadcast)",
    responses={200: {"content": {"application/msgpack": {}}}},
)
async def get_adapter(
    run_id: RunIdPath,
    version: IndexPath,
    request: Request,
    state: StateDep,
    settings: SettingsDep,
    keys: Annotated[str | None, Query(description="comma-separated subset of adapter keys")] = None,
) -> Response:
    """For nodes (bearer token) and operators (admin token). Checksum-verified on read."""
    token = bearer_token(request)
    if (
        not same_secret(token, settings.admin_token)
        and await state.store.node_by_token_hash(token_hash(token)) is None
    ):
        raise AuthError("unknown token")
    tensors = await global_state(state, settings.adapter_dir, run_id, version)
    wanted = list(tensors) if not keys else keys.split(",")
    unknown = [k for k in wanted if k not in tensors]
    if unknown:
        raise NotFoundError(f"version {version} has no keys {unknown[:3]}")
    message = AdapterBroadcast(
        run_id=run_id,
        round=version,
        version=version,
        tensors=state_to_payloads({k: tensors[k] for k in wanted}),
    )
    return msgpack_response(encode(message))


@router.get("/adapters/{version}/peft/{filename}", summary="Download a PEFT file of a version (operator)")
async def get_peft_file(
    run_id: RunIdPath, version: IndexPath, filename: str, request: Request, settings: SettingsDep
) -> FileResponse:
    """``adapter_config.json`` or ``adapter_model.safetensors``."""
    if not same_secret(bearer_token(request), settings.admin_token):
        raise ForbiddenError("operator endpoints need the admin token")
    if filename not in ("adapter_config.json", "adapter_model.safetensors"):
        raise NotFoundError(f"no file {filename!r}; use adapter_config.json or adapter_model.safetensors")
    path = version_dir(settings.adapter_dir, run_id, version) / filename
    if not path.is_file():
        raise NotFoundError(f"run {run_id} has no adapter version {version}")
    return FileResponse(path)


@router.get(
    "/adapters/{version}/delta",
    summary="The merged sketch that made a version from the one before (msgpack AdapterBroadcast)",
    responses={200: {"content": {"application/msgpack": {}}}},
)
async def get_adapter_delta(
    run_id: RunIdPath, version: IndexPath, request: Request, state: StateDep, settings: SettingsDep
) -> Response:
    """For nodes holding version ``version - 1``: apply the sketches to it to get ``version``
    bit for bit (DESIGN §3). 404 when the version has none (e.g. written before a restart that
    lost it): download the whole version instead."""
    token = bearer_token(request)
    if (
        not same_secret(token, settings.admin_token)
        and await state.store.node_by_token_hash(token_hash(token)) is None
    ):
        raise AuthError("unknown token")
    if await state.store.get_adapter_version(run_id, version) is None:
        raise NotFoundError(f"run {run_id} has no adapter version {version}")
    data = await asyncio.to_thread(load_delta, settings.adapter_dir, run_id, version)
    return msgpack_response(data)


def _check_peft_names(config: RunConfig, keys: list[str]) -> None:
    """Refuse keys the coordinator could not store as PEFT (it would fail the run)."""
    try:
        model_type = model_type_of(config.model.name)
    except ModelError:
        return  # the model is not known here; the coordinator reports that itself
    for name in keys:
        peft_key(model_type, name)  # AdapterMismatchError for a key with no PEFT name


@router.post("/rounds/{round_index}/edge-models", response_model=Ack, summary="An edge's model for a round")
async def upload_edge_model(
    run_id: RunIdPath,
    round_index: IndexPath,
    request: Request,
    edge: EdgeDep,
    state: StateDep,
    settings: SettingsDep,
) -> Ack:
    """msgpack ``AdapterUpdate`` from the edge itself, for the round in progress: the sketches of
    its model's delta from the round's start version. Every sketch must have this round's
    geometry for its key (409 otherwise) and be finite; keys must be the run's adapter keys."""
    body = await read_body(request, settings.max_body_bytes)
    update = decode(body, AdapterUpdate, max_bytes=settings.max_body_bytes)
    if update.run_id != run_id or update.round != round_index:
        raise ConflictError("update does not match the URL's run and round")
    if update.node_id != edge.node_id and update.node_id != edge.name:
        raise ForbiddenError("an edge may only upload its own model")
    key = (run_id, round_index)
    if key not in state.uploads:
        raise ConflictError(f"round {round_index} of run {run_id} is not collecting edge models")
    record = await state.store.get_run(run_id)
    if record is None:
        raise NotFoundError(f"unknown run {run_id}")
    config = parse_config(record.config, source=f"run {run_id}")
    latest = await state.store.latest_adapter_version(run_id)
    start = await start_model(
        state, settings.adapter_dir, run_id, config, latest.version if latest is not None else 0
    )
    sketches = read_update(update, start, config)
    if not sketches and update.aggregation_weight > 0:
        raise AdapterMismatchError("the edge model holds no sketches")
    _check_peft_names(config, list(sketches))
    if edge.node_id in state.uploads[key]:
        raise ConflictError(f"edge {edge.node_id} already uploaded round {round_index}")
    state.uploads[key][edge.node_id] = (sketches, update.aggregation_weight)
    await state.store.record_bytes(
        run_id, round_index, edge.node_id, "adapters_edge_to_cloud", len(body), now()
    )
    await state.store.record_participation(run_id, round_index, edge.node_id, "edge", "submitted", "", now())
    return Ack()


@router.post("/rounds/{round_index}/probes", response_model=Ack, summary="A device's probe report")
async def upload_probes(
    run_id: RunIdPath,
    round_index: IndexPath,
    request: Request,
    device: DeviceDep,
    state: StateDep,
    settings: SettingsDep,
) -> Ack:
    """msgpack ``ProbeReport`` of the device itself for the round in progress: its (Q x C) probe
    predictions and, in fingerprint rounds, its fingerprint (DESIGN §2.3). One per round."""
    body = await read_body(request, settings.max_body_bytes)
    message = decode(body, ProbeReport, max_bytes=settings.max_body_bytes)
    if message.run_id != run_id or message.round != round_index:
        raise ConflictError("probe report does not match the URL's run and round")
    if message.node_id not in (device.node_id, device.name):
        raise ForbiddenError("a device may only report its own probes")
    key = (run_id, round_index)
    if key not in state.probes:
        raise ConflictError(f"round {round_index} of run {run_id} is not collecting probe reports")
    participants = await state.store.list_participation(run_id, round_index)
    if not any(p.node_id == device.node_id and p.status == "assigned" for p in participants):
        raise ForbiddenError(f"device {device.name} was not assigned to round {round_index} of run {run_id}")
    if device.name in state.probes[key]:
        raise ConflictError(f"device {device.name} already reported probes for round {round_index}")
    record = await state.store.get_run(run_id)
    if record is None:
        raise NotFoundError(f"unknown run {run_id}")
    config = parse_config(record.config, source=f"run {run_id}")
    result = probe_result(message, config.control.num_probes, config.control.basis_dim)
    reference = next(iter(state.probes[key].values()), None)
    if reference is not None and reference.predictions.shape != result.predictions.shape:
        raise AdapterMismatchError(
            f"predictions of shape {result.predictions.shape} differ from the other devices' "
            f"{reference.predictions.shape}"
        )
    state.probes[key][device.name] = result
    await state.store.record_bytes(run_id, round_index, device.node_id, "probe_reports", len(body), now())
    return Ack()


@router.post("/rounds/{round_index}/reports", response_model=Ack, summary="A device's round report")
async def report(
    run_id: RunIdPath, round_index: IndexPath, body: MetricsReport, device: DeviceDep, state: StateDep
) -> Ack:
    """Losses, local evaluation and byte counts of one device for one round."""
    if body.run_id != run_id or body.round != round_index:
        raise ConflictError("report does not match the URL's run and round")
    if await state.store.get_round(run_id, round_index) is None:
        raise NotFoundError(f"run {run_id} has no round {round_index}")
    for kind, nbytes in body.bytes.items():
        if not 0 < len(kind) <= 64 or not 0 <= nbytes < 2**63:  # counts are 64-bit SQL integers
            raise RequestValidationError(
                [
                    {
                        "loc": ("body", "bytes", kind),
                        "msg": "kinds of 1-64 characters, counts in [0, 2**63)",
                        "type": "value_error",
                    }
                ]
            )
    participants = await state.store.list_participation(run_id, round_index)
    mine = {p.status for p in participants if p.node_id == device.node_id}
    if "assigned" not in mine:
        raise ForbiddenError(
            f"device {device.node_id} was not assigned to round {round_index} of run {run_id}"
        )
    if "reported" in mine:
        raise ConflictError(f"device {device.node_id} already reported round {round_index}")
    await state.store.record_metrics(run_id, round_index, device.node_id, body.metrics, now())
    for kind, nbytes in body.bytes.items():
        await state.store.record_bytes(run_id, round_index, device.node_id, kind, nbytes, now())
    await state.store.record_participation(
        run_id, round_index, device.node_id, "device", "reported", "", now()
    )
    return Ack()
