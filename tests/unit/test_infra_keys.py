"""Redis key builders: namespaced, versioned, distinct, and strict about ids."""

from __future__ import annotations

import pytest

from elsa.errors import ConfigError
from elsa.infra import keys

RUN_KEYS = (keys.assignment, keys.clusters, keys.trust, keys.split_plans, keys.round_state, keys.events)


def test_exact_layout() -> None:
    assert keys.PREFIX == "elsa:v1:"
    assert keys.assignment("r1") == "elsa:v1:run:r1:assignment"
    assert keys.clusters("r1") == "elsa:v1:run:r1:clusters"
    assert keys.trust("r1") == "elsa:v1:run:r1:trust"
    assert keys.split_plans("r1") == "elsa:v1:run:r1:split_plans"
    assert keys.round_state("r1") == "elsa:v1:run:r1:round_state"
    assert keys.events("r1") == "elsa:v1:run:r1:events"
    assert keys.heartbeat("node-7") == "elsa:v1:node:node-7:heartbeat"
    assert keys.run_pattern("r1") == "elsa:v1:run:r1:*"


def test_keys_are_distinct_across_kinds_and_ids() -> None:
    built = [f("r1") for f in RUN_KEYS] + [f("r2") for f in RUN_KEYS] + [keys.heartbeat("r1")]
    assert len(set(built)) == len(built)
    assert all(k.startswith(keys.PREFIX) for k in built)


@pytest.mark.parametrize("bad", ["", "a:b", "a b", "tab\there", "nl\n", "x" * 129, 7, None])
def test_bad_ids_are_config_errors(bad: object) -> None:
    for build in (*RUN_KEYS, keys.heartbeat, keys.run_pattern):
        with pytest.raises(ConfigError):
            build(bad)  # type: ignore[arg-type]


def test_ids_keep_their_characters() -> None:
    assert keys.trust("run_1.a@b-c") == "elsa:v1:run:run_1.a@b-c:trust"
    assert keys.heartbeat("x" * 128).endswith(":heartbeat")


def test_run_pattern_escapes_glob_characters() -> None:
    assert keys.run_pattern("r*[1]?") == "elsa:v1:run:r\\*\\[1\\]\\?:*"
