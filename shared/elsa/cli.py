"""The ``elsa`` command (typer). The only module that prints."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from elsa.errors import ConfigError, ElsaError

app = typer.Typer(help="ELSA: split-LoRA fine-tuning across edge networks.", no_args_is_help=True)
console = Console()


@app.callback()
def _root() -> None:
    """ELSA command line."""


@app.command()
def version() -> None:
    """Print the ELSA version."""
    from elsa import __version__

    typer.echo(__version__)


def _quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def _local_job(threads: int | None) -> None:
    """Set up a command that computes in this process: warnings-only logging, quiet libraries,
    ``threads`` torch CPU threads (None: torch's default)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _quiet_libraries()
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _fmt(value: float | None, pattern: str = "{:.3f}") -> str:
    return "-" if value is None else pattern.format(value)


@app.command()
def simulate(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML run config (default: the built-in default run)"),
    ] = None,
    out: Annotated[Path, typer.Option(help="folder for run outputs")] = Path("runs"),
    run_id: Annotated[str | None, typer.Option(help="run id (default: <name>-<timestamp>)")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (default: all cores)")] = None,
    strategy: Annotated[
        str | None,
        typer.Option(
            help="run a baseline or ablation derived from the config instead of ELSA: centralized, "
            "fedavg, splitfed, hierfl, elsa, elsa-no-clustering, elsa-no-trust, elsa-no-sketch, "
            "elsa-no-ssop, elsa-static-split (same data, seeds and step budget)"
        ),
    ] = None,
) -> None:
    """Run a fine-tuning job in the simulation runtime (all tiers in one process)."""
    _local_job(threads)
    from elsa.runtime.config import RunConfig, load_config
    from elsa.runtime.report import plot_rounds, write_metrics
    from elsa.runtime.simulation import Simulation
    from elsa.runtime.strategies import strategy_config

    try:
        cfg = load_config(config) if config is not None else RunConfig()
        if strategy is not None:
            cfg = strategy_config(cfg, strategy)
        rid = run_id or f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        out_dir = out / rid
        console.print(
            f"[bold]ELSA simulate[/] run [cyan]{rid}[/]: model={cfg.model.name} data={cfg.data.dataset} "
            f"edges={cfg.topology.edges} devices={cfg.num_devices} cloud_rounds={cfg.train.cloud_rounds} "
            f"(tau2={cfg.train.edge_rounds}, tau1={cfg.train.local_steps}) cut=h{cfg.model.head_blocks}/t{cfg.model.tail_blocks}"
        )
        t0 = time.perf_counter()
        with console.status("loading model and data ...") as status:
            sim = Simulation.from_config(cfg, run_id=rid)
        console.print(
            f"loaded in {time.perf_counter() - t0:.1f}s: {len(sim.devices)} devices with "
            f"{[d.num_examples for d in sim.devices]} examples, {len(sim.test_data)} test examples"
        )
        total = cfg.train.cloud_rounds * cfg.train.edge_rounds * cfg.num_devices
        done = 0

        def on_event(name: str, fields: dict[str, Any]) -> None:
            nonlocal done
            if name == "device_trained":
                done += 1
                status.update(
                    f"cloud round {fields['cloud_round']}/{cfg.train.cloud_rounds} · edge round "
                    f"{fields['edge_round']}/{cfg.train.edge_rounds} · {fields['device']} loss {fields['loss']:.3f} "
                    f"· {done}/{total} device-rounds"
                )
            elif name == "evaluated":
                console.print(
                    f"round 0 (initial): test loss {fields['loss']:.3f} accuracy {_fmt(fields.get('accuracy'))}"
                )
            elif name == "control":
                groups = len(set(fields["clusters"].values())) if fields["clusters"] else 1
                note = f" · quarantined {', '.join(fields['quarantined'])}" if fields["quarantined"] else ""
                console.print(
                    f"control after round {fields['cloud_round']}: {groups} cluster(s)"
                    f"{' (re-clustered)' if fields['reclustered'] else ''} · trust "
                    f"{min(fields['trust'].values(), default=1.0):.2f}-{max(fields['trust'].values(), default=1.0):.2f}"
                    f"{note}"
                )
            elif name == "cloud_round_done":
                sent = sum(fields["bytes"].values()) / 1e6
                console.print(
                    f"cloud round {fields['cloud_round']}: train loss {fields['train_loss']:.3f} · test loss "
                    f"{fields['test_loss']:.3f} · accuracy {_fmt(fields['test_accuracy'])} · {sent:.1f} MB moved · "
                    f"{fields['wall_s']:.1f}s"
                )

        with console.status("training ...") as status:
            result = sim.run(on_event)
        metrics = result.metrics_dict()
        adapter_dir = sim.export_adapter(out_dir / "adapter")
        metrics_path = write_metrics(metrics, out_dir)
        plot_path = plot_rounds(metrics, out_dir / "metrics.png")
    except ElsaError as exc:
        console.print(f"[red]error[/] {exc.code}: {exc.detail}")
        raise typer.Exit(2) from exc
    table = Table(title=f"run {rid}")
    for col in ("round", "train loss", "test loss", "accuracy", "MB moved", "of which adapters", "wall s"):
        table.add_column(col, justify="right")
    for r in result.rounds:
        adapters = sum(v for k, v in r.bytes.items() if k.startswith("adapters_"))
        table.add_row(
            str(r.cloud_round),
            _fmt(r.train_loss),
            _fmt(r.test_loss),
            _fmt(r.test_accuracy),
            f"{sum(r.bytes.values()) / 1e6:.1f}",
            f"{adapters / 1e6:.2f}",
            f"{r.wall_s:.1f}",
        )
    console.print(table)
    console.print(f"metrics: {metrics_path}\nplot:    {plot_path}\nadapter: {adapter_dir} (PEFT format)")
    console.print(f"total wall time {result.wall_s:.1f}s")


@app.command()
def demo(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML run config (default: the built-in default run)"),
    ] = None,
    out: Annotated[Path, typer.Option(help="folder for run outputs")] = Path("runs"),
    redis_url: Annotated[
        str | None, typer.Option(envvar="ELSA_REDIS_URL", help="use this Redis instead of an embedded server")
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            envvar="ELSA_DATABASE_URL", help="SQL store URL (default: SQLite file in the run folder)"
        ),
    ] = None,
    startup_timeout_s: Annotated[float, typer.Option(help="how long services may take to start")] = 180.0,
) -> None:
    """Start cloud, edges and device agents as separate processes on loopback and run a real fine-tuning."""
    _quiet_libraries()
    from elsa.runtime.config import RunConfig, load_config
    from elsa.runtime.launcher import Operator, plan_demo, running_cluster, start_services, wait_healthy
    from elsa.runtime.report import plot_service_rounds, service_report_markdown, write_metrics

    try:
        cfg = load_config(config) if config is not None else RunConfig()
        cfg.resolved_num_labels()
    except ElsaError as exc:
        console.print(f"[red]error[/] {exc.code}: {exc.detail}")
        raise typer.Exit(2) from exc
    _interrupt_on_signals()
    demo_id = f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = (out / demo_id).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    plan = plan_demo(cfg, run_dir, redis_url, database_url)
    started = time.perf_counter()
    console.print(
        f"[bold]ELSA demo[/] {demo_id}: 1 cloud, {cfg.topology.edges} edges, {cfg.num_devices} device agents "
        f"(separate processes), model={cfg.model.name}, data={cfg.data.dataset}, {cfg.train.cloud_rounds} cloud rounds"
    )
    try:
        with running_cluster(run_dir) as cluster:
            redis = start_services(cluster, plan, run_dir)
            console.print(
                f"redis: {redis if redis_url else redis + ' (embedded)'}   logs: {run_dir / 'logs'}"
            )
            with console.status("starting services ...") as status:
                urls = [c.url for c in cluster.children if c.url]
                wait_healthy(
                    urls, startup_timeout_s, lambda ok, n: status.update(f"starting services ... {ok}/{n} up")
                )
            console.print("Swagger UI (while the demo runs):")
            for child in cluster.children:
                if child.url:
                    console.print(f"  {child.name:<11} {child.url}/docs")
            console.print(f"operator token for the cloud API: {plan.admin_token}")
            operator = Operator(plan.cloud_url, plan.admin_token)
            run = operator.create_run(cfg)
            run_id = run["run_id"]
            console.print(f"run [cyan]{run_id}[/] created")
            shown: set[int] = set()
            state = run["state"]
            with console.status("waiting for devices to join ...") as status:
                while state in ("created", "running", "paused"):
                    time.sleep(2.0)
                    cluster.sample_memory()
                    cluster.check_alive()
                    view = operator.get(f"/v1/runs/{run_id}")
                    state = view["state"]
                    metrics = operator.get(f"/v1/runs/{run_id}/metrics")["rounds"]
                    for r in metrics:
                        if (
                            r["state"] == "completed"
                            and r["round"] not in shown
                            and r["reports"] >= cfg.num_devices
                        ):
                            shown.add(r["round"])
                            m = r["metrics"]
                            console.print(
                                f"cloud round {r['round']}/{cfg.train.cloud_rounds}: train loss {m.get('train_loss', float('nan')):.3f}"
                                f" · accuracy {m.get('eval_accuracy', float('nan')):.3f} (devices' local test, edge model)"
                                f" · {sum(r['bytes'].values()) / 1e6:.1f} MB moved"
                            )
                    status.update(
                        f"run {state} · round {view['current_round']}/{cfg.train.cloud_rounds} · "
                        f"{int(time.perf_counter() - started)}s"
                    )
            # final evaluation reports of the last round may still be in flight
            deadline = time.monotonic() + 60
            metrics = operator.get(f"/v1/runs/{run_id}/metrics")["rounds"]
            while metrics and metrics[-1]["reports"] < cfg.num_devices and time.monotonic() < deadline:
                time.sleep(1.0)
                metrics = operator.get(f"/v1/runs/{run_id}/metrics")["rounds"]
            view = operator.get(f"/v1/runs/{run_id}")
            adapter_dir = None
            if view.get("latest_version"):
                adapter_dir = operator.download_adapter(
                    run_id, int(view["latest_version"]), run_dir / "adapter"
                )
            cluster.sample_memory()
            summary = {
                "run_id": run_id,
                "state": view["state"],
                "wall_s": time.perf_counter() - started,
                "edges": cfg.topology.edges,
                "devices": cfg.num_devices,
                "model": cfg.model.name,
                "dataset": cfg.data.dataset,
                "config": cfg.model_dump(mode="json"),
                "rounds": metrics,
                "rounds_sql": operator.get(f"/v1/runs/{run_id}/rounds"),
                "peak_memory": cluster.peak_memory_by_kind(),
                "adapter_dir": str(adapter_dir) if adapter_dir else None,
            }
    except ElsaError as exc:
        console.print(f"[red]error[/] {exc.code}: {exc.detail}")
        console.print(f"logs: {run_dir / 'logs'}")
        raise typer.Exit(1) from exc
    metrics_path = write_metrics(summary, run_dir)
    plot_path = plot_service_rounds(summary["rounds"], run_dir / "metrics.png", run_id)
    (run_dir / "report.md").write_text(service_report_markdown(summary), encoding="utf-8")
    console.print(service_report_markdown(summary))
    console.print(f"report:  {run_dir / 'report.md'}\nmetrics: {metrics_path}\nplot:    {plot_path}")
    console.print(
        f"adapter: {summary['adapter_dir']} (PEFT format; PeftModel.from_pretrained on the base model)"
    )
    if summary["state"] != "completed":
        raise typer.Exit(1)


def _interrupt_on_signals() -> None:
    """SIGINT (Ctrl-C) and SIGTERM both unwind the launcher so that it stops its children."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)


def _serve(app_path: str, host: str, port: int, tier: str) -> None:
    """Serve one app under uvicorn; HTTPS when ``ELSA_<TIER>_TLS_CERTFILE`` (and ``_KEYFILE``)
    name a PEM certificate and key."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    certfile = os.environ.get(f"ELSA_{tier}_TLS_CERTFILE") or None
    keyfile = os.environ.get(f"ELSA_{tier}_TLS_KEYFILE") or None
    if (certfile is None) != (keyfile is None):
        typer.echo(
            f"error: set both ELSA_{tier}_TLS_CERTFILE and ELSA_{tier}_TLS_KEYFILE, or neither", err=True
        )
        raise typer.Exit(2)
    for path in (certfile, keyfile):
        if path is not None and not os.path.isfile(path):
            typer.echo(f"error: TLS file {path} does not exist", err=True)
            raise typer.Exit(2)
    uvicorn.run(app_path, factory=True, host=host, port=port, ssl_certfile=certfile, ssl_keyfile=keyfile)


@app.command()
def cloud(host: str = "0.0.0.0", port: int = 8000) -> None:
    """Run the cloud coordinator (configured by ELSA_CLOUD_* variables)."""
    _serve("elsa_cloud.main:create_app", host, port, "CLOUD")


@app.command()
def edge(host: str = "0.0.0.0", port: int = 8100) -> None:
    """Run an edge server (configured by ELSA_EDGE_* variables)."""
    _serve("elsa_edge.main:create_app", host, port, "EDGE")


@app.command()
def client(host: str = "0.0.0.0", port: int = 8200) -> None:
    """Run a device agent (configured by ELSA_CLIENT_* variables)."""
    _serve("elsa_client.main:create_app", host, port, "CLIENT")


def _fail(exc: ElsaError) -> typer.Exit:
    """Print an error on stderr; exit 3 when a dependency stayed unavailable, else 2."""
    from elsa.errors import UnavailableError

    typer.echo(f"error {exc.code}: {exc.detail}", err=True)
    return typer.Exit(3 if isinstance(exc, UnavailableError) else 2)


@app.command()
def migrate(
    database_url: Annotated[
        str | None,
        typer.Option(envvar="ELSA_CLOUD_DATABASE_URL", help="the cloud's SQLAlchemy URL", show_default=False),
    ] = None,
    schema: Annotated[
        str | None, typer.Option(envvar="ELSA_CLOUD_DATABASE_SCHEMA", help="PostgreSQL schema (search_path)")
    ] = None,
    timeout_s: Annotated[
        float, typer.Option(min=0, help="how long to wait for the database to accept connections")
    ] = 60.0,
) -> None:
    """Bring the cloud's database to the newest schema (Alembic); running it again changes nothing.

    Exit codes: 0 migrated, 2 bad URL or failed migration, 3 database unreachable.
    """
    from elsa.infra.migrate import head_revision, migrate_when_reachable
    from elsa.infra.sql.engine import async_url

    if not database_url:
        raise _fail(ConfigError("no database URL: pass --database-url or set ELSA_CLOUD_DATABASE_URL"))
    try:
        shown = async_url(database_url).render_as_string(hide_password=True)
        migrate_when_reachable(
            database_url,
            schema=schema,
            timeout_s=timeout_s,
            on_retry=lambda exc: typer.echo(f"waiting for the database: {exc.detail}", err=True),
        )
    except ElsaError as exc:
        raise _fail(exc) from exc
    typer.echo(f"database {shown} is at revision {head_revision()}")


@app.command()
def submit(
    config: Annotated[Path, typer.Option("--config", "-c", help="YAML run config", show_default=False)],
    cloud_url: Annotated[
        str, typer.Option(envvar="ELSA_CLOUD_URL", help="base URL of the cloud coordinator")
    ] = "http://127.0.0.1:8000",
    admin_token: Annotated[
        str | None,
        typer.Option(
            envvar="ELSA_ADMIN_TOKEN", help="the cloud's ELSA_CLOUD_ADMIN_TOKEN", show_default=False
        ),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="follow the run, one line per finished round, until it ends")
    ] = False,
    attach: Annotated[
        bool, typer.Option("--attach", help="follow an active run of the config's name instead of adding one")
    ] = False,
    timeout_s: Annotated[
        float, typer.Option(min=0, help="how long the cloud may stay unreachable (starting, restarting)")
    ] = 300.0,
    poll_s: Annotated[float, typer.Option(min=0, help="seconds between status polls with --wait")] = 2.0,
) -> None:
    """Create a run on a deployed cloud (POST /v1/runs) and, with --wait, follow it to its end.

    Exit codes: 0 created (or, with --wait, completed), 1 the run failed or was stopped,
    2 the config or the admin token was rejected, 3 the cloud stayed unreachable.
    """
    import httpx

    from elsa.runtime.config import load_config
    from elsa.runtime.submit import CloudOperator, submit_run

    if not admin_token:
        raise _fail(ConfigError("no admin token: pass --admin-token or set ELSA_ADMIN_TOKEN"))
    try:
        cfg = load_config(config)
        typer.echo(
            f"submitting run {cfg.name!r} to {cloud_url}: model={cfg.model.name} data={cfg.data.dataset} "
            f"{cfg.topology.edges} edges x {cfg.topology.devices_per_edge} devices, "
            f"{cfg.train.cloud_rounds} cloud rounds"
        )
        with httpx.Client(base_url=cloud_url, timeout=30.0) as client:
            operator = CloudOperator(client, admin_token, timeout_s=timeout_s)
            run, attached = submit_run(operator, cfg, attach=attach)
            typer.echo(f"{'following active' if attached else 'created'} run {run.run_id} ({run.state})")
            if not wait:
                return
            final = operator.follow(
                run.run_id,
                lambda r: typer.echo(r.describe()),
                expected_reports=cfg.num_devices,
                poll_s=poll_s,
            )
    except ElsaError as exc:
        raise _fail(exc) from exc
    version = f", adapter v{final.latest_version}" if final.latest_version is not None else ""
    typer.echo(f"run {final.run_id} {final.state}{version}")
    if final.latest_version is not None:
        typer.echo(f"adapter: {cloud_url}/v1/runs/{final.run_id}/adapters/{final.latest_version}/peft/")
    if final.state != "completed":
        raise typer.Exit(1)


_ATTACK_NOTES = {
    "nn": "nearest word embedding (cosine) of each received row",
    "lsq": "ridge inversion trained on SS-OP-perturbed public text",
    "mlp": "MLP inversion trained on SS-OP-perturbed public text",
    "lsq_u": "ridge on the kept subspace coordinates only (no kappa removes this)",
    "mlp_u": "MLP on the kept subspace coordinates only (no kappa removes this)",
}


def _extra_kappas(extra: list[str], given: list[float] | None) -> list[float]:
    """``--kappa 0 0.5 1``: click takes the first value; the rest arrive as extra arguments."""
    values: list[float] = []
    for arg in extra:
        try:
            values.append(float(arg))
        except ValueError:
            raise typer.BadParameter(f"unexpected argument {arg!r}") from None
    if values and not given:
        raise typer.BadParameter(f"unexpected arguments {extra} (kappa values follow --kappa)")
    return values


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def attack(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML run config (default: the built-in default run)"),
    ] = None,
    kappa: Annotated[
        list[float] | None,
        typer.Option(
            "--kappa",
            "-k",
            help="kappa values to attack, e.g. --kappa 0 0.5 1 (default: 0 0.5 1 2 4 + the config's)",
        ),
    ] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (default: all cores)")] = None,
    public_texts: Annotated[
        int, typer.Option(min=2, help="public Guardian headlines the attacker trains on")
    ] = 2000,
    private_texts: Annotated[
        int, typer.Option(min=1, help="texts of the run's training split that are attacked")
    ] = 100,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="also write the results as JSON here")
    ] = None,
) -> None:
    """Attack the run's own cut activations: token recovery with and without SS-OP, per kappa."""
    # The attacker sees what a device sends at the lower cut (model.head_blocks) and knows the
    # base model, the public subspace U (privacy.rank) and kappa; it trains its inversions on
    # public text perturbed with its own noise draws. Special tokens are not scored.
    _local_job(threads)
    import json

    from elsa.runtime.attack_study import attack_cut, prepare_attack_study, study_kappas
    from elsa.runtime.config import RunConfig, load_config

    try:
        cfg = load_config(config) if config is not None else RunConfig()
        kappas = study_kappas(cfg, [*(kappa or []), *_extra_kappas(list(ctx.args), kappa)])
        cfg.resolved_num_labels()
        console.print(
            f"[bold]ELSA attack[/] model={cfg.model.name} data={cfg.data.dataset} cut after "
            f"{cfg.model.head_blocks} block(s), subspace rank {cfg.privacy.rank}, wire {cfg.transport.dtype}, "
            f"kappa {list(kappas)}"
        )
        t0 = time.perf_counter()
        with console.status("loading model and texts ...") as status:
            study = prepare_attack_study(cfg, public_texts, private_texts)
            status.update(f"attacking {len(kappas)} kappa value(s) ...")
            result = attack_cut(study, kappas)
        wall_s = time.perf_counter() - t0
    except ElsaError as exc:
        console.print(f"[red]error[/] {exc.code}: {exc.detail}")
        raise typer.Exit(2) from exc
    names = list(dict.fromkeys(r.attack for r in result.rows))
    cells = {(r.kappa, r.attack): f"{r.top1:.3f} / {r.top5:.3f}" for r in result.rows}
    table = Table(
        title=f"token recovery top-1 / top-5 ({result.private_tokens} private tokens, "
        f"attacker trained on {result.public_tokens} public tokens)"
    )
    table.add_column("kappa", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    for k in kappas:
        mark = " (config)" if k == cfg.privacy.kappa else ""
        table.add_row(f"{k:g}{mark}", *(cells[(k, name)] for name in names))
    console.print(table)
    for name in names:
        console.print(f"  {name:<6} {_ATTACK_NOTES.get(name, '')}")
    console.print(f"wall time {wall_s:.1f}s")
    if json_out is not None:
        record = {
            "config": cfg.model_dump(mode="json"),
            "kappas": list(kappas),
            "public_texts": study.public_texts,
            "private_texts": study.private_texts,
            "wall_s": wall_s,
            **result.as_dict(),
        }
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        console.print(f"results: {json_out}")


@app.command()
def report(
    path: Annotated[
        Path,
        typer.Argument(help="a run folder, its metrics.json, or a study result JSON with a 'report' key"),
    ],
    out: Annotated[
        Path | None, typer.Option(help="folder for the markdown and PNGs (default: the JSON's folder)")
    ] = None,
) -> None:
    """Render results as markdown with PNG figures, and print the markdown.

    \b
    elsa report runs/RUN_ID
        a run folder of `elsa simulate` (or `elsa demo`): report.md, metrics.png, bytes.png
    elsa report bench/results/NAME.json --out DIR
        a study result with a "report" key: NAME.md and its figures (default: next to the JSON)
    """
    from rich.markup import escape

    from elsa.runtime.report import render_path

    try:
        md_path, markdown = render_path(path, out)
    except ElsaError as exc:
        console.print(f"[red]error[/] {exc.code}: {escape(exc.detail)}", soft_wrap=True)
        raise typer.Exit(2) from exc
    typer.echo(markdown)
    typer.echo(f"report: {md_path}")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted: every child process was stopped")
        sys.exit(130)


if __name__ == "__main__":
    main()
