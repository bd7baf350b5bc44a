"""The shipped public probe set (DESIGN §4)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from elsa.data import (
    PROBE_SET_SEED,
    PROBE_SET_SIZE,
    load_bbc_news,
    load_probe_set,
    load_rotten_tomatoes,
    read_guardian_headlines,
    sample_probe_set,
)
from elsa.errors import DataError

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_probe_set.py"


@pytest.fixture(scope="module")
def probes() -> tuple[str, ...]:
    return load_probe_set()


def test_probe_set_has_256_distinct_normalised_lines(probes: tuple[str, ...]) -> None:
    assert PROBE_SET_SIZE == 256
    assert len(probes) == 256
    assert len(set(probes)) == 256
    assert all(p and p == " ".join(p.split()) for p in probes)


def test_shipped_file_format() -> None:
    raw = (Path(__file__).resolve().parents[2] / "shared" / "elsa" / "data" / "probes.txt").read_bytes()
    text = raw.decode("utf-8")
    assert text.endswith("\n")
    lines = text.split("\n")[:-1]
    assert len(lines) == 256
    assert all(line.strip() for line in lines)


def test_probe_set_is_disjoint_from_training_tasks(probes: tuple[str, ...]) -> None:
    training = load_bbc_news().texts + load_rotten_tomatoes().texts
    assert not set(probes) & set(training)
    lowered = [t.lower() for t in training]
    assert not [p for p in probes if any(p.lower() in t for t in lowered)]


def test_prefixes_and_bounds(probes: tuple[str, ...]) -> None:
    assert load_probe_set(10) == probes[:10]
    assert load_probe_set(1) == probes[:1]
    with pytest.raises(DataError):
        load_probe_set(0)
    with pytest.raises(DataError):
        load_probe_set(257)


def test_guardian_headlines_are_distinct_and_clean() -> None:
    headlines = read_guardian_headlines()
    assert 4000 <= len(headlines) <= 4080
    assert len(set(headlines)) == len(headlines)
    assert all(h and h == " ".join(h.split()) for h in headlines)


def test_sample_probe_set_is_seeded_and_filters() -> None:
    pool = [f"headline {i}" for i in range(50)] + ["headline 3", "  headline   4 "]
    a = sample_probe_set(pool, 10, seed=1, exclude={"headline 0"})
    assert a == sample_probe_set(pool, 10, seed=1, exclude={"headline 0"})
    assert a != sample_probe_set(pool, 10, seed=2, exclude={"headline 0"})
    assert len(set(a)) == 10
    assert "headline 0" not in a
    with pytest.raises(DataError):
        sample_probe_set(pool, 50, seed=1, exclude={"headline 0"})
    with pytest.raises(DataError):
        sample_probe_set(pool, 0, seed=1)


def test_shipped_file_matches_the_generator(probes: tuple[str, ...]) -> None:
    spec = importlib.util.spec_from_file_location("make_probe_set", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.pop("make_probe_set", None)
    spec.loader.exec_module(module)
    assert PROBE_SET_SEED == 20260101
    assert module.build_probe_lines() == probes
