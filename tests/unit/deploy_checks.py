"""What the deployment tests (compose, k8s, image) check alike: ELSA_* names against the services'
settings classes, the CLI's default ports, the Dockerfile's instructions."""

from __future__ import annotations

import inspect
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel
from pydantic_settings import BaseSettings

from elsa import cli
from elsa.model.packaged import CACHE_DIR_ENV
from elsa.runtime.submit import ADMIN_TOKEN_ENV, CLOUD_URL_ENV
from elsa_client.settings import ClientSettings
from elsa_cloud.settings import CloudSettings
from elsa_edge.settings import EdgeSettings

ROOT = Path(__file__).resolve().parents[2]

#: settings class of each environment prefix (``ELSA_CLOUD_`` -> CloudSettings, ...)
SETTINGS: dict[str, type[BaseSettings]] = {
    str(cls.model_config["env_prefix"]): cls for cls in (CloudSettings, EdgeSettings, ClientSettings)
}

#: the settings prefix each ``elsa`` command reads (migrate reads the cloud's database URL)
COMMAND_PREFIX: dict[str, str | None] = {
    "cloud": "ELSA_CLOUD_",
    "migrate": "ELSA_CLOUD_",
    "edge": "ELSA_EDGE_",
    "client": "ELSA_CLIENT_",
    "submit": None,
}

#: ELSA_* variables that are no service setting: the operator's `elsa submit` and the model cache
COMMAND_VARIABLES = frozenset({CLOUD_URL_ENV, ADMIN_TOKEN_ENV, CACHE_DIR_ENV})

#: the serving commands and the port each listens on by default
SERVING_COMMANDS = ("cloud", "edge", "client")


def default_port(command: str) -> int:
    """The ``--port`` default of ``elsa <command>``."""
    port = inspect.signature(getattr(cli, command)).parameters["port"].default
    assert isinstance(port, int)
    return port


def setting_problem(name: str, prefix: str | None = None) -> str | None:
    """Why ``name`` is not a setting (of the tier with ``prefix``, when given), or None if it is.

    Names outside ``ELSA_*`` are not checked (None). ``ELSA_<TIER>_FIELD`` must name a field of
    that tier's settings class; ``FIELD__SUB`` a field of a nested model. The variables of
    :data:`COMMAND_VARIABLES` pass where no tier is required.
    """
    if not name.startswith("ELSA_"):
        return None
    if name in COMMAND_VARIABLES and prefix is None:
        return None
    owner = next((p for p in SETTINGS if name.startswith(p)), None)
    if owner is None:
        return f"{name}: no ELSA service reads it (prefixes: {sorted(SETTINGS)})"
    if prefix is not None and owner != prefix:
        return f"{name}: a setting of {owner}*, set where only {prefix}* is read"
    model: type[BaseModel] = SETTINGS[owner]
    path = name[len(owner) :].lower().split("__")
    for depth, part in enumerate(path):
        info = model.model_fields.get(part)
        if info is None:
            return f"{name}: {model.__name__} has no field {part!r}"
        nested = info.annotation
        if depth + 1 < len(path):
            if not (inspect.isclass(nested) and issubclass(nested, BaseModel)):
                return f"{name}: {model.__name__}.{part} has no nested fields"
            model = nested
    return None


@dataclass
class Stage:
    """One stage of a Dockerfile: its FROM line and instructions (keyword, argument text)."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        """The argument text of every ``keyword`` instruction, in order."""
        return [text for kw, text in self.instructions if kw == keyword]


def dockerfile_stages(path: Path = ROOT / "Dockerfile") -> list[Stage]:
    """Parse a Dockerfile into stages (comments dropped, continuation lines joined)."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, text = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = text.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif stages:
            stages[-1].instructions.append((keyword, text.strip()))
    return stages


def dockerfile_uid() -> int:
    """The numeric uid the final stage runs as (``USER uid[:gid]``)."""
    user = dockerfile_stages()[-1].args("USER")[-1]
    uid = user.split(":")[0]
    assert uid.isdigit(), f"USER {user}: use a numeric uid so that runAsNonRoot can verify it"
    return int(uid)


def pins(text: str) -> dict[str, str]:
    """``name==version`` requirements in a command line, by name."""
    out: dict[str, str] = {}
    for word in shlex.split(text):
        match = re.fullmatch(r"([A-Za-z0-9_.\-\[\]]+)==([A-Za-z0-9_.+\-]+)", word)
        if match:
            out[match.group(1).split("[")[0].lower()] = match.group(2)
    return out
