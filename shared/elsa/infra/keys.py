"""Every Redis key ELSA uses, and nothing else builds one (DESIGN §5).

Keys are namespaced and versioned: ``elsa:v1:<scope>:<id>:<what>``. A change of value layout
bumps the version, so old and new processes never read each other's values. Ids must be non-empty,
at most 128 characters, without ``:`` or whitespace (they would make keys ambiguous); anything
else raises :class:`~elsa.errors.ConfigError`.

Value layouts (all JSON, written by :class:`elsa.infra.live.LiveStore`):

=====================  ========  ==========================================================
key                    type      value
=====================  ========  ==========================================================
``assignment``         string    ``{device node_id: edge node_id}``
``clusters``           string    ``{device name: cluster}``
``trust``              string    ``{device name: trust}``
``split_plans``        hash      field device name → ``[head_blocks, tail_blocks]``
``round_state``        string    free-form JSON object
``events``             list      JSON objects, oldest first, capped
``heartbeat``          string    ``1``, with a TTL (liveness)
=====================  ========  ==========================================================
"""

from __future__ import annotations

import re
from typing import Final

from elsa.errors import ConfigError

PREFIX: Final = "elsa:v1:"
"""Namespace and layout version of every key."""

_ID: Final = re.compile(r"[^:\s]{1,128}")
_GLOB: Final = re.compile(r"([*?\[\]\\])")


def _id(value: str, what: str) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise ConfigError(f"{what} must be 1-128 characters without ':' or whitespace, got {value!r}")
    return value


def _run(run_id: str, what: str) -> str:
    return f"{PREFIX}run:{_id(run_id, 'run_id')}:{what}"


def assignment(run_id: str) -> str:
    """Key of the run's device → edge assignment."""
    return _run(run_id, "assignment")


def clusters(run_id: str) -> str:
    """Key of the run's device → cluster membership."""
    return _run(run_id, "clusters")


def trust(run_id: str) -> str:
    """Key of the run's device → trust scores."""
    return _run(run_id, "trust")


def split_plans(run_id: str) -> str:
    """Key of the hash of the run's split plans (one field per device)."""
    return _run(run_id, "split_plans")


def round_state(run_id: str) -> str:
    """Key of the run's live round state."""
    return _run(run_id, "round_state")


def events(run_id: str) -> str:
    """Key of the run's capped event list."""
    return _run(run_id, "events")


def heartbeat(node_id: str) -> str:
    """Key whose presence (TTL) says the node is alive."""
    return f"{PREFIX}node:{_id(node_id, 'node_id')}:heartbeat"


def run_pattern(run_id: str) -> str:
    """Glob matching every key of the run (for ``SCAN MATCH``); glob characters in the id are escaped."""
    escaped = _GLOB.sub(r"\\\1", _id(run_id, "run_id"))
    return f"{PREFIX}run:{escaped}:*"
