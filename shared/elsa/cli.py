"""The ``elsa`` command (typer). The only module that prints."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from elsa.errors import ElsaError

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
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


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
) -> None:
    """Run a fine-tuning job in the simulation runtime (all tiers in one process)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _quiet_libraries()
    import torch

    from elsa.runtime.config import RunConfig, load_config
    from elsa.runtime.report import plot_rounds, write_metrics
    from elsa.runtime.simulation import Simulation

    if threads is not None:
        torch.set_num_threads(threads)
    try:
        cfg = load_config(config) if config is not None else RunConfig()
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

        def on_event(name: str, fields: dict[str, Any]) -> None:
            if name == "device_trained":
                on_event.done += 1  # type: ignore[attr-defined]
                status.update(
                    f"cloud round {fields['cloud_round']}/{cfg.train.cloud_rounds} · edge round "
                    f"{fields['edge_round']}/{cfg.train.edge_rounds} · {fields['device']} loss {fields['loss']:.3f} "
                    f"· {on_event.done}/{total} device-rounds"  # type: ignore[attr-defined]
                )
            elif name == "evaluated":
                console.print(
                    f"round 0 (initial): test loss {fields['loss']:.3f} accuracy {_fmt(fields.get('accuracy'))}"
                )
            elif name == "cloud_round_done":
                sent = sum(fields["bytes"].values()) / 1e6
                console.print(
                    f"cloud round {fields['cloud_round']}: train loss {fields['train_loss']:.3f} · test loss "
                    f"{fields['test_loss']:.3f} · accuracy {_fmt(fields['test_accuracy'])} · {sent:.1f} MB moved · "
                    f"{fields['wall_s']:.1f}s"
                )

        on_event.done = 0  # type: ignore[attr-defined]
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
    for col in ("round", "train loss", "test loss", "accuracy", "MB moved", "wall s"):
        table.add_column(col, justify="right")
    for r in result.rounds:
        table.add_row(
            str(r.cloud_round),
            _fmt(r.train_loss),
            _fmt(r.test_loss),
            _fmt(r.test_accuracy),
            f"{sum(r.bytes.values()) / 1e6:.1f}",
            f"{r.wall_s:.1f}",
        )
    console.print(table)
    console.print(f"metrics: {metrics_path}\nplot:    {plot_path}\nadapter: {adapter_dir} (PEFT format)")
    console.print(f"total wall time {result.wall_s:.1f}s")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
