"""The documentation stays true to the code: the generated configuration reference is current,
names only real settings, and the architecture page's links and endpoints exist."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Literal

import pytest
from fastapi import FastAPI
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from elsa_client.main import create_app as create_client
from elsa_client.settings import ClientSettings
from elsa_cloud.main import create_app as create_cloud
from elsa_cloud.settings import CloudSettings
from elsa_edge.main import create_app as create_edge
from elsa_edge.settings import EdgeSettings

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
#: the docs whose links this test checks (others are checked by their own tests)
CHECKED = (DOCS / "architecture.md", DOCS / "configuration.md")
SETTINGS: tuple[type[BaseSettings], ...] = (CloudSettings, EdgeSettings, ClientSettings)


def _load_script() -> ModuleType:
    name = "config_reference"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "config_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their module while the file executes
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference() -> ModuleType:
    return _load_script()


# --- the configuration reference --------------------------------------------------------------


def test_configuration_reference_is_current(reference: ModuleType) -> None:
    committed = (DOCS / "configuration.md").read_text(encoding="utf-8")
    assert committed == reference.render(), (
        "docs/configuration.md is stale: run .venv/bin/python scripts/config_reference.py"
    )


def test_check_mode_fails_on_a_stale_file(reference: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "configuration.md"
    assert reference.main(["--out", str(out)]) == 0
    assert reference.main(["--check", "--out", str(out)]) == 0
    out.write_text(out.read_text(encoding="utf-8") + "edited by hand\n", encoding="utf-8")
    assert reference.main(["--check", "--out", str(out)]) == 1


def _env_names(cls: type[BaseModel], prefix: str, delimiter: str) -> set[str]:
    names: set[str] = set()
    for name, field in cls.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= _env_names(annotation, f"{prefix}{name}{delimiter}".upper(), delimiter)
        else:
            names.add(f"{prefix}{name}".upper())
    return names


def _settings_env_names() -> tuple[set[str], set[str]]:
    names: set[str] = set()
    prefixes: set[str] = set()
    for cls in SETTINGS:
        prefix = str(cls.model_config["env_prefix"])
        prefixes.add(prefix)
        names |= _env_names(cls, prefix, str(cls.model_config.get("env_nested_delimiter") or ""))
    return names, prefixes


def test_every_elsa_variable_in_the_reference_is_real(reference: ModuleType) -> None:
    text = "\n".join(page.read_text(encoding="utf-8") for page in CHECKED)
    fields, prefixes = _settings_env_names()
    # variables read outside the settings classes must be read somewhere in the code
    sources = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "shared" / "elsa").rglob("*.py"))
    others = {name for name, _, _ in reference.OTHER_VARIABLES}
    assert all(f'"{name}"' in sources for name in others), others
    mentioned = re.findall(r"\bELSA_[A-Z0-9_]*[A-Z0-9](?:_\*)?", text)
    assert mentioned
    for name in mentioned:
        if name.endswith("_*"):
            assert name[:-1] in prefixes, f"{name} is not a settings prefix"
        else:
            assert name in fields or name in others, f"{name} is not a settings field"
    assert fields <= set(mentioned), f"settings missing from the reference: {sorted(fields - set(mentioned))}"


class _Inner(BaseModel):
    limit_s: float = Field(1.5, gt=0, description="inner limit")


class _Example(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ELSA_TEST_", env_nested_delimiter="__")

    join_secret: str = Field("change-me", description="shared secret")
    inner: _Inner = _Inner()
    mode: Literal["a", "b"] = Field("a", description="x|y <b>bold</b> 2*3")
    sizes: tuple[int, ...] | None = Field(None, min_length=1)
    max_body_bytes: int = Field(4 * 1024**2, ge=1024)
    level: str = Field("INFO", pattern="^(INFO|DEBUG)$")


def test_a_new_settings_field_is_picked_up(reference: ModuleType) -> None:
    rows = {r.name: r for r in reference.env_rows(_Example, "ELSA_TEST_", "__")}
    assert list(rows) == [
        "`ELSA_TEST_JOIN_SECRET`",
        "`ELSA_TEST_INNER__LIMIT_S`",
        "`ELSA_TEST_MODE`",
        "`ELSA_TEST_SIZES`",
        "`ELSA_TEST_MAX_BODY_BYTES`",
        "`ELSA_TEST_LEVEL`",
    ]
    assert rows["`ELSA_TEST_JOIN_SECRET`"].description.startswith("**Secret")
    inner = rows["`ELSA_TEST_INNER__LIMIT_S`"]
    assert (inner.type, inner.default, inner.constraints) == ("float", "`1.5`", "> 0")
    assert rows["`ELSA_TEST_MODE`"].type == "one of `a`, `b`"
    sizes = rows["`ELSA_TEST_SIZES`"]
    assert (sizes.type, sizes.default, sizes.constraints) == (
        "list of int (optional)",
        "unset",
        "at least 1 long",
    )
    assert rows["`ELSA_TEST_MAX_BODY_BYTES`"].default == "`4194304` (4 MiB)"
    assert rows["`ELSA_TEST_LEVEL`"].constraints == "matches `^(INFO|DEBUG)$`"
    assert reference.cell(rows["`ELSA_TEST_MODE`"].description) == r"x\|y \<b>bold\</b> 2\*3"
    assert reference.cell(rows["`ELSA_TEST_LEVEL`"].constraints) == r"matches `^(INFO\|DEBUG)$`"


def test_yaml_comments_by_key_path(reference: ModuleType) -> None:
    text = (
        "# header comment\n"
        "name: demo   # the run's name\n"
        "model:\n"
        "  rank: 8        # LoRA rank\n"
        "                 # continued here\n"
        "  # a standalone comment is nobody's\n"
        "  alpha: 16\n"
        "  tag: 'a # b'   # quoted hash\n"
        "train:           # the optimiser\n"
        "  steps: 5  # tau1\n"
    )
    assert reference.yaml_comments(text) == {
        "name": "the run's name",
        "model.rank": "LoRA rank continued here",
        "model.tag": "quoted hash",
        "train": "the optimiser",
        "train.steps": "tau1",
    }


def test_fields_without_description_fall_back_to_the_yaml_comment(reference: ModuleType) -> None:
    class Section(BaseModel):
        steps: int = Field(5, ge=1)
        rate: float = Field(0.1, description="from the code")

    class Config(BaseModel):
        seed: int = 0
        train: Section = Section()

    comments = {"train.steps": "from the yaml", "train.rate": "ignored", "seed": "the seed"}
    sections = reference.config_sections(Config, comments)
    assert [(key, [(r.name, r.description) for r in rows]) for key, _, rows in sections] == [
        ("", [("`seed`", "the seed")]),
        ("train", [("`train.steps`", "from the yaml"), ("`train.rate`", "from the code")]),
    ]


# --- links and endpoints of the owned pages ---------------------------------------------------


def _strip_code_blocks(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)


def _slug(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = _strip_code_blocks(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, flags=re.MULTILINE):
        slug = _slug(heading)
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


@pytest.mark.parametrize("page", CHECKED, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    text = _strip_code_blocks(page.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "", text)  # code spans are not links
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links, f"{page.name} has no links to check"
    for link in links:
        if re.match(r"[a-z]+:", link):  # http:, https:, mailto:
            continue
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        assert path.exists(), f"{page.name}: {link} does not exist"
        if anchor:
            assert path.suffix == ".md", f"{page.name}: {link} anchors a non-markdown file"
            assert anchor in _anchors(path), f"{page.name}: {link} names no heading of {path.name}"


def _routes(app: FastAPI) -> set[tuple[str, str]]:
    """(METHOD, path with its parameters blanked) of every route in the app's OpenAPI document."""
    paths = app.openapi()["paths"]
    return {
        (method.upper(), re.sub(r"\{[^}]*\}", "{}", path)) for path, ops in paths.items() for method in ops
    }


def test_architecture_names_only_real_endpoints(tmp_path: Path) -> None:
    apps = (
        create_cloud(
            CloudSettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'elsa.db'}", adapter_dir=tmp_path)
        ),
        create_edge(EdgeSettings(autostart=False, cloud_url="http://127.0.0.1:9")),
        create_client(ClientSettings(autostart=False, cloud_url="http://127.0.0.1:9")),
    )
    real = set().union(*(_routes(app) for app in apps))
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    named = re.findall(r"\b(GET|POST|PUT|PATCH|DELETE) (/[A-Za-z0-9_{}./-]*)", text)
    assert len(named) > 10
    for method, path in named:
        key = (method, re.sub(r"\{[^}]*\}", "{}", path.rstrip(".")))
        assert key in real, f"docs/architecture.md names {method} {path}, which no service serves"


def test_architecture_has_the_round_protocol_diagram() -> None:
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```mermaid\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    assert any(b.startswith("sequenceDiagram") for b in blocks)
    assert any(b.startswith("flowchart") for b in blocks)


def test_architecture_lists_every_library_package_and_layer() -> None:
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    packages = sorted(p.parent.name for p in (ROOT / "shared" / "elsa").glob("*/__init__.py"))
    missing = [name for name in packages if f"`{name}/`" not in text]
    assert not missing, f"docs/architecture.md does not place these packages: {missing}"
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    layers = re.search(r'type = "layers"\s*layers = \[(.*?)\]', pyproject, flags=re.DOTALL)
    assert layers is not None
    for layer in re.findall(r'"([^"]+)"', layers.group(1)):
        written = " | ".join(f"`{module.strip()}`" for module in layer.split("|"))
        assert written in text, f"docs/architecture.md does not list the layer {layer}"
