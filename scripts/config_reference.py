"""Generate ``docs/configuration.md`` from the code: every setting of the three services and
every field of a run config.

* Services: one table per pydantic-settings class (environment variable, type, default,
  constraints, description), read from the class itself, so a field added to a settings class
  appears here at the next run. Nested models are expanded with the class's nested delimiter.
* Run config: one table per section of ``elsa.runtime.config.RunConfig`` (YAML key path, type,
  default, constraints, description). A field without a description falls back to its trailing
  comment in ``configs/default.yaml``.

Deterministic: the output depends only on the code and ``configs/default.yaml``, never on the
environment. Usage: ``python scripts/config_reference.py`` writes the file;
``python scripts/config_reference.py --check`` exits 1 when the committed file is stale.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import inspect
import re
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "configuration.md"
DEFAULT_CONFIG = ROOT / "configs" / "default.yaml"
REGENERATE = ".venv/bin/python scripts/config_reference.py"


@dataclass(frozen=True)
class Service:
    """A service and where its settings class lives (``module:Class``)."""

    title: str
    command: str
    settings: str


SERVICES = (
    Service("Cloud coordinator", "elsa cloud", "elsa_cloud.settings:CloudSettings"),
    Service("Edge server", "elsa edge", "elsa_edge.settings:EdgeSettings"),
    Service("Device agent", "elsa client", "elsa_client.settings:ClientSettings"),
)
RUN_CONFIG = "elsa.runtime.config:RunConfig"

#: setting names that hold a secret, and URLs that carry credentials in production
SECRET_NAME = re.compile(r"secret|token|password")
CREDENTIAL_URL = re.compile(r"^(database|redis)_url$")

#: ELSA_* variables read outside the settings classes: (name, read by, meaning)
OTHER_VARIABLES = (
    (
        "ELSA_REDIS_URL",
        "`elsa demo`",
        "Redis the demo's cloud uses instead of the embedded Redis-protocol server",
    ),
    (
        "ELSA_DATABASE_URL",
        "`elsa demo`, `python -m elsa.infra.migrate`, Alembic",
        "SQL URL (the demo's default: a SQLite file in the run folder)",
    ),
    (
        "ELSA_CLOUD_URL",
        "`elsa submit`",
        "base URL of the cloud to submit a run to (not a cloud setting: the cloud ignores it)",
    ),
    (
        "ELSA_ADMIN_TOKEN",
        "`elsa submit`",
        "the cloud's admin token (`ELSA_CLOUD_ADMIN_TOKEN`) the operator presents",
    ),
    (
        "ELSA_CACHE_DIR",
        "every process that loads a model",
        "cache of converted models (default `~/.cache/elsa`)",
    ),
)

_RST_LITERAL = re.compile(r"``(.+?)``")
_RST_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")
_DESIGN_REF = re.compile(r"\s*\(DESIGN §[^)]*\)|\s*DESIGN §[\d.§-]+")


@dataclass(frozen=True)
class Row:
    """One line of a reference table."""

    name: str
    type: str
    default: str
    constraints: str
    description: str


# --- reading the code -------------------------------------------------------------------------


def load(target: str) -> type[BaseModel]:
    """The class named by ``module:Class``."""
    module, _, name = target.partition(":")
    cls = getattr(importlib.import_module(module), name)
    if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
        raise TypeError(f"{target} is not a pydantic model")
    return cls


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (``X`` or ``X | None``), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if _is_union(annotation):
        models = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(models) == 1:
            return _model_of(models[0])
    return None


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def type_text(annotation: Any, *, yaml: bool) -> str:
    """A field's type for a reader: ``int``, ``float or null``, ``one of `a`, `b```..."""
    if _is_union(annotation):
        args = typing.get_args(annotation)
        inner = [a for a in args if a is not type(None)]
        text = " or ".join(type_text(a, yaml=yaml) for a in inner)
        if len(inner) < len(args):
            text += " or null" if yaml else " (optional)"
        return text
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{_scalar(v, yaml=yaml)}`" for v in typing.get_args(annotation))
    if origin in (tuple, list, set, frozenset):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        item = type_text(args[0], yaml=yaml) if len(set(args)) == 1 else "value"
        return f"list of {item}"
    if origin in (dict, Mapping):
        return "mapping"
    if annotation is Path:
        return "path"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _scalar(value: Any, *, yaml: bool) -> str:
    if value is None:
        return "null" if yaml else "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path):
        return value.as_posix()
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_scalar(v, yaml=yaml) for v in value) + "]"
    return str(value)


def default_text(name: str, field: FieldInfo, *, yaml: bool) -> str:
    """The default as the reader would write it (``required`` when there is none)."""
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None and not yaml:
        return "unset"
    text = f"`{_scalar(value, yaml=yaml)}`"
    if name.endswith("_bytes") and isinstance(value, int) and not isinstance(value, bool):
        for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
            if value >= size and value % size == 0:
                text += f" ({value // size} {unit})"
                break
    return text


def constraint_text(field: FieldInfo) -> str:
    """Bounds, lengths and patterns from the field's metadata (``> 0``, ``≤ 1``, ...)."""
    parts: list[str] = []
    for item in field.metadata:
        for attr, fmt in (
            ("gt", "> {}"),
            ("ge", "≥ {}"),
            ("lt", "< {}"),
            ("le", "≤ {}"),
            ("multiple_of", "multiple of {}"),
            ("min_length", "at least {} long"),
            ("max_length", "at most {} long"),
            ("pattern", "matches `{}`"),
        ):
            value = getattr(item, attr, None)
            if value is not None:
                parts.append(fmt.format(value))
    return ", ".join(parts)


def doc_text(doc: str | None) -> str:
    """A docstring as markdown paragraphs (rst literals and roles turned into code spans)."""
    if not doc:
        return ""
    paragraphs = [" ".join(p.split()) for p in inspect.cleandoc(doc).split("\n\n")]
    text = "\n\n".join(p for p in paragraphs if p)
    text = _RST_ROLE.sub(r"`\1`", _RST_LITERAL.sub(r"`\1`", text))
    return _DESIGN_REF.sub("", text)


def _description(field: FieldInfo, fallback: str = "") -> str:
    text = " ".join((field.description or fallback).split())
    return _DESIGN_REF.sub("", text)


def env_rows(cls: type[BaseModel], prefix: str, delimiter: str) -> list[Row]:
    """The environment variables of a settings class (nested models expanded with ``delimiter``)."""
    rows: list[Row] = []
    for name, field in cls.model_fields.items():
        alias = field.validation_alias if isinstance(field.validation_alias, str) else field.alias
        variable = (alias or f"{prefix}{name}").upper()
        nested = _model_of(field.annotation)
        if nested is not None and delimiter:
            rows.extend(env_rows(nested, variable + delimiter, delimiter))
            continue
        description = _description(field)
        if SECRET_NAME.search(name):
            description = "**Secret: set it in production.** " + description
        elif CREDENTIAL_URL.match(name):
            description = "**Holds credentials in production: keep it secret.** " + description
        rows.append(
            Row(
                f"`{variable}`",
                type_text(field.annotation, yaml=False),
                default_text(name, field, yaml=False),
                constraint_text(field),
                description,
            )
        )
    return rows


def secret_fields(cls: type[BaseModel]) -> list[str]:
    """The names of a settings class's fields that hold secrets or credentials."""
    return [n for n in cls.model_fields if SECRET_NAME.search(n) or CREDENTIAL_URL.match(n)]


def yaml_comments(text: str) -> dict[str, str]:
    """Trailing comments of a YAML file by dotted key path (``control.tau_min`` → comment).

    A comment-only line whose ``#`` sits in the column of the previous key's comment continues
    it. Only block mappings with plain keys are understood; anything else is skipped.
    """
    key_line = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][A-Za-z0-9_]*):(?P<rest>.*)$")
    comments: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    last: tuple[str, int] | None = None
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        if not stripped:
            last = None
            continue
        if stripped.startswith("#"):
            column = len(line) - len(stripped)
            if last is not None and column == last[1]:
                comments[last[0]] += " " + stripped[1:].strip()
            else:
                last = None
            continue
        match = key_line.match(line)
        if match is None:
            last = None
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [match["key"]])
        value, column = _split_comment(match["rest"])
        if not value.strip():
            stack.append((indent, match["key"]))
        if column is None:
            last = None
            continue
        comment_at = len(line) - len(match["rest"]) + column
        comments[path] = match["rest"][column + 1 :].strip()
        last = (path, comment_at)
    return comments


def _split_comment(rest: str) -> tuple[str, int | None]:
    """(value, column of ``#`` in ``rest`` or None): a ``#`` after whitespace, outside quotes."""
    quote: str | None = None
    for i, char in enumerate(rest):
        if quote is not None:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or rest[i - 1] in " \t"):
            return rest[:i], i
    return rest, None


def config_sections(cls: type[BaseModel], comments: Mapping[str, str]) -> list[tuple[str, str, list[Row]]]:
    """(key, section docstring, rows) per section of the run config; top-level scalars first."""
    top: list[Row] = []
    sections: list[tuple[str, str, list[Row]]] = []
    for name, field in cls.model_fields.items():
        nested = _model_of(field.annotation)
        if nested is None:
            top.append(_config_row(name, field, comments))
            continue
        rows: list[Row] = []
        _collect(nested, name, comments, rows)
        sections.append((name, doc_text(nested.__doc__), rows))
    if top:
        sections.insert(0, ("", doc_text(cls.__doc__), top))
    return sections


def _collect(cls: type[BaseModel], path: str, comments: Mapping[str, str], rows: list[Row]) -> None:
    for name, field in cls.model_fields.items():
        key = f"{path}.{name}"
        nested = _model_of(field.annotation)
        if nested is not None:
            _collect(nested, key, comments, rows)
        else:
            rows.append(_config_row(key, field, comments))


def _config_row(key: str, field: FieldInfo, comments: Mapping[str, str]) -> Row:
    return Row(
        f"`{key}`",
        type_text(field.annotation, yaml=True),
        default_text(key, field, yaml=True),
        constraint_text(field),
        _description(field, comments.get(key, "")),
    )


# --- writing markdown -------------------------------------------------------------------------


def cell(text: str) -> str:
    """Text safe inside a table cell: pipes escaped everywhere (the table parser unescapes
    them inside code spans too); outside code spans, lone ``*`` and a ``<`` that could open an
    HTML tag are escaped."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):  # even parts lie outside code spans
        parts[i] = re.sub(r"(?<!\*)\*(?!\*)", r"\\*", parts[i])
        parts[i] = re.sub(r"<(?=[A-Za-z/!?])", r"\\<", parts[i])
    return "`".join(parts).replace("|", "\\|")


def table(first: str, rows: list[Row]) -> list[str]:
    """A markdown table of ``rows``."""
    lines = [
        f"| {first} | type | default | constraints | description |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        values = (r.name, r.type, r.default, r.constraints, r.description)
        lines.append("| " + " | ".join(cell(v) for v in values) + " |")
    return lines


def _settings(service: Service) -> tuple[type[BaseModel], str, str]:
    """(settings class, env prefix, nested delimiter) of a service."""
    cls = load(service.settings)
    prefix = str(cls.model_config.get("env_prefix") or "")
    delimiter = str(cls.model_config.get("env_nested_delimiter") or "")
    return cls, prefix, delimiter


def _service_heading(service: Service) -> str:
    return f"{service.title} (`{_settings(service)[1]}*`)"


def _section_heading(key: str) -> str:
    return f"`{key}`" if key else "Top level"


def render() -> str:
    """The whole of ``docs/configuration.md``."""
    comments = yaml_comments(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    run_config = load(RUN_CONFIG)
    sections = config_sections(run_config, comments)
    out = [
        "# Configuration reference",
        "",
        "<!-- Generated by scripts/config_reference.py from the code: do not edit by hand. -->",
        f"<!-- Regenerate with `{REGENERATE}`; `--check` tells whether this file is stale. -->",
        "",
        "ELSA has two kinds of configuration: the **service settings** of each process (environment",
        "variables, read once when the app is built) and the **run config** of a fine-tuning job",
        "(YAML, given to `elsa simulate` and `elsa demo` or posted to `POST /v1/runs`). The tables",
        "below are generated from the classes that validate them.",
        "",
        "- [Service settings](#service-settings)",
        *(f"  - [{_service_heading(s)}](#{_slug(_service_heading(s))})" for s in SERVICES),
        "  - [Other environment variables](#other-environment-variables)",
        "- [Run config](#run-config)",
        *(f"  - [{_section_heading(k)}](#{_slug(_section_heading(k))})" for k, _, _ in sections),
        "",
        "## Service settings",
        "",
        *_settings_intro(),
    ]
    for service in SERVICES:
        out += _service_part(service)
    out += _other_variables()
    out += _run_config_part(sections)
    return "\n".join(out).rstrip("\n") + "\n"


def _settings_intro() -> list[str]:
    secrets: list[str] = []
    for service in SERVICES:
        cls, prefix, _ = _settings(service)
        for name in secret_fields(cls):
            default = default_text(name, cls.model_fields[name], yaml=False)
            secrets.append(f"`{(prefix + name).upper()}` (default {default})")
    return [
        "Each service reads one pydantic-settings class: its field `name` is the variable",
        "`<PREFIX>NAME` (matched case-insensitively); fields of nested models join with the class's",
        "nested delimiter (`__`); lists and mappings are given as JSON. A value that fails",
        "validation stops the service at start, naming the variable.",
        "",
        "**Set the secrets and credentials yourself in production:** " + ", ".join(secrets) + ".",
        "The defaults only serve `elsa demo` on loopback. Every node of a deployment presents the",
        "same join secret, and a PostgreSQL or Redis URL that carries a password belongs in a",
        "secret store, not in a ConfigMap.",
        "",
    ]


def _service_part(service: Service) -> list[str]:
    cls, prefix, delimiter = _settings(service)
    module, _, name = service.settings.partition(":")
    summary = f"`{service.command}` reads `{module}.{name}`"
    if cls.__doc__:
        summary += f": {doc_text(cls.__doc__)}"
    lines = [f"### {_service_heading(service)}", "", summary, ""]
    return [*lines, *table("variable", env_rows(cls, prefix, delimiter)), ""]


def _other_variables() -> list[str]:
    lines = [
        "### Other environment variables",
        "",
        "Read by the command line and the library rather than by a service's settings class.",
        "",
        "| variable | read by | meaning |",
        "|---|---|---|",
    ]
    lines += [f"| `{name}` | {who} | {cell(what)} |" for name, who, what in OTHER_VARIABLES]
    return [*lines, ""]


def _run_config_part(sections: list[tuple[str, str, list[Row]]]) -> list[str]:
    module, _, name = RUN_CONFIG.partition(":")
    lines = [
        "## Run config",
        "",
        f"A run config is a YAML mapping validated by `{module}.{name}`, a tree of frozen pydantic",
        "models: an unknown key or an invalid value is rejected with the key's path, and a missing",
        "key takes the default below. `configs/default.yaml` (the run of `make demo`) spells out",
        "every section with comments; where a field has no description in the code, the table",
        "shows its comment from that file. Some combinations are refused as a whole (for instance",
        "`strategy.split: false` with `sketch.enabled: true`), and the services run only ELSA's",
        "split, two-tier protocol (`RunConfig.check_service_runtime`): the baselines, one-tier",
        "aggregation and",
        "`faults.dropout` run in `elsa simulate` only.",
        "",
    ]
    for key, doc, rows in sections:
        lines += [f"### {_section_heading(key)}", ""]
        if doc:
            lines += [doc, ""]
        lines += [*table("key", rows), ""]
    return lines


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


# --- command line -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Write the reference, or with ``--check`` compare it with the committed file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed file is stale")
    parser.add_argument("--out", type=Path, default=OUTPUT, help="where to write (default: %(default)s)")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.is_file() else ""
        if current == text:
            print(f"{args.out} is up to date")
            return 0
        diff = difflib.unified_diff(
            current.splitlines(), text.splitlines(), "committed", "generated", lineterm="", n=1
        )
        sys.stderr.write("\n".join(list(diff)[:40]) + "\n")
        sys.stderr.write(f"docs/configuration.md is stale: run {REGENERATE}\n")
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8", newline="\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
