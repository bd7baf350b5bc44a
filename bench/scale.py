"""Benchmark: the scale study (DESIGN §7.6) — simulated devices per process, split sessions per edge.

Two parts, one command:

1. *Devices simulated in one process* (``scale_devices.py``): memory per device and time per
   cloud round as N grows (N in 10, 50, 100, 200; one process per N plus a 1-device reference).
2. *Concurrent split sessions on one edge* (``scale_sessions.py``): C in 1, 4, 16, 32 clients,
   each a split session on one real edge process over HTTP; p50/p99 step latency, aggregate
   steps/s and errors (every non-2xx answer).

Prints a table per part, writes the JSON (with a ``report`` that ``elsa report`` renders) and
three PNGs next to it (``<stem>_devices_memory.png``, ``<stem>_devices_round.png``,
``<stem>_sessions.png``). Exits with status 1 after writing when part 2 saw an error.

Usage: ``python bench/scale.py [--quick] [--threads T] [--out bench/results/scale.json]``
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from benchkit import (
    machine_info,
    median,
    print_table,
    quiet_transformers,
    set_torch_threads,
    study_parser,
    write_results,
)
from scale_devices import devices_study
from scale_sessions import sessions_study

NAME = "scale"
MIB = 2**20


def _devices_rows(part: dict[str, Any]) -> list[list[Any]]:
    ref = part["reference"]
    rows: list[list[Any]] = [
        [1, ref["edges"], len(ref["round_s"]), ref["rss_bytes"] / MIB, None, median(ref["round_s"]), None]
    ]
    rows += [
        [
            r["devices"],
            r["edges"],
            r["rounds_timed"],
            r["rss_mib"],
            r["mib_per_device"],
            r["s_per_round"],
            r["s_per_device_step"],
        ]
        for r in part["rows"]
    ]
    return rows


def _sessions_rows(part: dict[str, Any]) -> list[list[Any]]:
    return [
        [
            r["clients"],
            r["steps"],
            r["step_ms"]["p50"],
            r["step_ms"]["p99"],
            r["http_ms"]["p50"],
            r["http_ms"]["p99"],
            r["steps_per_s"],
            r["errors"],
            r["edge_rss_bytes"] / MIB,
            100 * r["edge_cpu_s"] / r["wall_s"] if r["wall_s"] > 0 else None,
        ]
        for r in part["levels"]
    ]


DEVICES_COLUMNS = [
    "devices N",
    "edges",
    "rounds timed",
    "RSS MiB",
    "MiB per added device",
    "s per cloud round",
    "s per device-step",
]
SESSIONS_COLUMNS = [
    "clients C",
    "steps timed",
    "p50 step ms",
    "p99 step ms",
    "p50 HTTP ms",
    "p99 HTTP ms",
    "steps/s (all clients)",
    "errors",
    "edge RSS MiB",
    "edge CPU %",
]


def study_report(record: dict[str, Any], stem: str) -> dict[str, Any]:
    """The ``report`` dict (``elsa report``'s study contract) of a scale record."""
    devices, sessions = record["devices"], record["sessions"]
    dp, sp = devices["params"], sessions["params"]
    ns = [1, *(r["devices"] for r in devices["rows"])]
    cs = [r["clients"] for r in sessions["levels"]]
    rss = [devices["reference"]["rss_bytes"] / MIB, *(r["rss_mib"] for r in devices["rows"])]
    trimmed = [
        (s["rss_bytes_trimmed"] or s["rss_bytes"]) / MIB for s in [devices["reference"], *devices["samples"]]
    ]
    text = (
        f"Part 1: N simulated devices in one process ({dp['devices_per_edge']} per edge), "
        f"1 edge round x 1 local step of batch {dp['batch_size']} x {dp['max_length']} per device and cloud "
        f"round, control plane on ({dp['num_probes']} probes), no evaluation; RSS right after the last "
        "device's step of round 1; MiB per added device = (RSS(N) - RSS(1)) / (N - 1). "
        f"Part 2: C clients, each a split session on one real edge process over HTTP, "
        f"{sp['steps_per_client']} timed steps each (after {sp['warmup_steps']} warm-up), "
        f"{sp['transport_dtype']} cut tensors; every non-2xx answer is an error."
    )
    return {
        "title": "Scale: devices per process, split sessions per edge (DESIGN §7.6)",
        "text": text,
        "tables": [
            {
                "title": "Devices simulated in one process",
                "columns": DEVICES_COLUMNS,
                "rows": _devices_rows(devices),
            },
            {
                "title": "Concurrent split sessions on one edge",
                "columns": SESSIONS_COLUMNS,
                "rows": _sessions_rows(sessions),
            },
        ],
        "figures": [
            {
                "file": f"{stem}_devices_memory.png",
                "title": "Resident memory vs simulated devices",
                "xlabel": "devices N",
                "ylabel": "MiB",
                "kind": "line",
                "logx": False,
                "series": {
                    "RSS": {"x": ns, "y": rss, "err": None},
                    "RSS after malloc_trim": {"x": ns, "y": trimmed, "err": None},
                },
            },
            {
                "file": f"{stem}_devices_round.png",
                "title": "Cloud round time vs simulated devices",
                "xlabel": "devices N",
                "ylabel": "s per cloud round",
                "kind": "line",
                "logx": False,
                "series": {
                    "s per cloud round": {
                        "x": ns,
                        "y": [
                            median(devices["reference"]["round_s"]),
                            *(r["s_per_round"] for r in devices["rows"]),
                        ],
                        "err": None,
                    }
                },
            },
            {
                "file": f"{stem}_sessions.png",
                "title": "Split step latency vs concurrent sessions on one edge",
                "xlabel": "concurrent clients C",
                "ylabel": "ms per step",
                "kind": "line",
                "logx": True,
                "series": {
                    "p50 step": {
                        "x": cs,
                        "y": [r["step_ms"]["p50"] for r in sessions["levels"]],
                        "err": None,
                    },
                    "p99 step": {
                        "x": cs,
                        "y": [r["step_ms"]["p99"] for r in sessions["levels"]],
                        "err": None,
                    },
                    "p50 HTTP (fwd+bwd)": {
                        "x": cs,
                        "y": [r["http_ms"]["p50"] for r in sessions["levels"]],
                        "err": None,
                    },
                },
            },
        ],
    }


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def print_report(record: dict[str, Any]) -> None:
    """The two tables."""
    for table in record["report"]["tables"]:
        print_table(table["title"], table["columns"], [[_cell(v) for v in row] for row in table["rows"]])


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both parts; writes the PNGs next to ``args.out``; returns the record."""
    from elsa.runtime.report import render_study

    threads = set_torch_threads(args.threads)
    machine = machine_info()
    started = time.perf_counter()
    devices = devices_study(args)
    devices_s = time.perf_counter() - started
    sessions = sessions_study(args, threads)
    record: dict[str, Any] = {
        "benchmark": NAME,
        "description": "memory and round time vs simulated devices; split step latency vs concurrent sessions",
        "machine": machine,
        "params": {"threads": threads, "quick": args.quick},
        "wall_s": {"devices": devices_s, "sessions": time.perf_counter() - started - devices_s},
        "devices": devices,
        "sessions": sessions,
    }
    record["report"] = study_report(record, args.out.stem)
    render_study(record["report"], args.out.parent)  # validates the report, writes the PNGs
    return record


def main() -> None:
    parser = study_parser(__doc__, NAME, "smoke run: N in {4, 8}, C in {1, 4}, 2 steps, 1 round")
    parser.add_argument("--devices", type=int, nargs="+", default=[10, 50, 100, 200])
    parser.add_argument("--rounds", type=int, default=2, help="cloud rounds timed per N (at most)")
    parser.add_argument("--examples-per-device", type=int, default=8)
    parser.add_argument("--probes", type=int, default=32, help="probe sentences per device report")
    parser.add_argument("--budget-s", type=float, default=600.0, help="time budget of part 1")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per client")
    parser.add_argument("--max-requests", type=int, default=2000, help="cap on part 2's HTTP requests")
    parser.add_argument("--max-level-s", type=float, default=180.0, help="cap on one C level's duration")
    parser.add_argument("--request-timeout-s", type=float, default=120.0)
    args = parser.parse_args()
    if args.quick:
        args.devices, args.rounds, args.clients, args.steps = [4, 8], 1, [1, 4], 2
    quiet_transformers()
    record = run(args)
    print_report(record)
    print(f"wrote {write_results(args.out, record)}")
    errors = sum(level["errors"] for level in record["sessions"]["levels"])
    if errors:
        raise SystemExit(f"{errors} HTTP errors in the sessions part (must be 0)")


if __name__ == "__main__":
    main()
