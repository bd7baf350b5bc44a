"""docker-compose.yml and .env.example, read statically (no Docker engine runs here): services,
start order, health checks, settings names, ports, partitions, and the run it submits."""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from deploy_checks import COMMAND_PREFIX, ROOT, SERVING_COMMANDS, default_port, setting_problem

from elsa.runtime.config import RunConfig, load_config

COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
#: ${NAME}, ${NAME:-default}, ${NAME-default}
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = compose["services"]
    return out


@pytest.fixture(scope="module")
def run_config(services: dict[str, dict[str, Any]]) -> RunConfig:
    """The run the submit service creates, read through its bind mount."""
    command = services["submit"]["command"]
    path = command[command.index("--config") + 1]
    for volume in services["submit"].get("volumes", []):
        host, target = volume.split(":")[:2]
        if path.startswith(target.rstrip("/") + "/"):
            return load_config(ROOT / host / path[len(target.rstrip("/")) + 1 :])
    raise AssertionError(f"{path} is not mounted into the submit service")


def _command(service: dict[str, Any]) -> str | None:
    """The elsa subcommand an ELSA service runs (None for redis, postgres)."""
    command = service.get("command")
    if not isinstance(command, list) or command[0] not in COMMAND_PREFIX:
        return None
    return str(command[0])


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment as a mapping"
    return {str(k): str(v) for k, v in env.items()}


def _by_command(services: dict[str, dict[str, Any]], command: str) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if _command(s) == command}


def _env_example() -> tuple[dict[str, str], set[str]]:
    """.env.example: the assignments, and every ELSA_* name it mentions (commented ones too)."""
    assigned: dict[str, str] = {}
    mentioned: set[str] = set()
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$", line.strip())
        if match is None:
            continue
        mentioned.add(match.group(2))
        if match.group(1) is None:
            assigned[match.group(2)] = match.group(3)
    return assigned, mentioned


def test_services_of_the_demo_deployment(services: dict[str, dict[str, Any]]) -> None:
    expected = {"redis", "postgres", "migrate", "cloud", "edge-0", "edge-1", "submit"}
    expected |= {f"device-{i}" for i in range(4)}
    assert {n for n, s in services.items() if not s.get("profiles")} == expected
    assert services["prometheus"]["profiles"] == ["monitoring"], "Prometheus only on request"
    commands = {name: _command(s) for name, s in services.items()}
    assert commands["migrate"] == "migrate" and commands["cloud"] == "cloud"
    assert commands["submit"] == "submit"
    assert {n for n, c in commands.items() if c == "edge"} == {"edge-0", "edge-1"}
    assert {n for n, c in commands.items() if c == "client"} == {f"device-{i}" for i in range(4)}


def test_every_elsa_service_runs_the_image_built_here(services: dict[str, dict[str, Any]]) -> None:
    elsa = {n: s for n, s in services.items() if _command(s)}
    assert len({s["image"] for s in elsa.values()}) == 1
    for name, service in elsa.items():
        build = service["build"]
        assert (ROOT / build["context"] / build["dockerfile"]).is_file(), name


def test_start_order(services: dict[str, dict[str, Any]]) -> None:
    def needs(name: str) -> dict[str, str]:
        return {k: v["condition"] for k, v in services[name]["depends_on"].items()}

    assert needs("migrate") == {"postgres": "service_healthy"}
    cloud = needs("cloud")
    assert cloud["migrate"] == "service_completed_successfully"
    assert cloud["redis"] == "service_healthy"
    edges = _by_command(services, "edge")
    devices = _by_command(services, "client")
    for name in edges:
        assert needs(name) == {"cloud": "service_healthy"}
    for name in devices:
        assert needs(name) == dict.fromkeys(edges, "service_healthy")
    assert needs("submit") == {"cloud": "service_healthy", **dict.fromkeys(devices, "service_healthy")}
    for name in ("migrate", "submit"):
        assert services[name]["restart"] == "no", f"{name} is a one-shot"


def test_health_checks_probe_readiness_on_each_services_port(services: dict[str, dict[str, Any]]) -> None:
    assert "redis-cli" in services["redis"]["healthcheck"]["test"]
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]
    for name, service in services.items():
        command = _command(service)
        if command not in SERVING_COMMANDS:
            continue
        test = service["healthcheck"]["test"]
        assert test[:2] == ["CMD", "python"], f"{name}: the slim image has python, not curl"
        urls = re.findall(r"http://[^'\"]+", " ".join(test))
        assert urls == [f"http://127.0.0.1:{default_port(command)}/ready"], name


def test_environment_names_are_settings_of_the_services_tier(services: dict[str, dict[str, Any]]) -> None:
    problems = []
    for name, service in services.items():
        command = _command(service)
        if command is None:
            continue
        for key in _env(service):
            problem = setting_problem(key, COMMAND_PREFIX[command])
            if problem or (command == "submit" and not key.startswith("ELSA_")):
                problems.append(f"{name}: {problem or key}")
    assert not problems


def test_ports_are_the_cli_defaults(services: dict[str, dict[str, Any]]) -> None:
    published: list[str] = []
    for name, service in services.items():
        command = _command(service)
        if command not in SERVING_COMMANDS:
            assert "ports" not in service or command is None, name
            continue
        args = service["command"]
        if "--port" in args:
            assert int(args[args.index("--port") + 1]) == default_port(command), name
        for mapping in service["ports"]:
            host_ip, host_port, container_port = str(mapping).split(":")
            assert int(container_port) == default_port(command), name
            assert host_ip == "127.0.0.1", f"{name}: published on loopback only"
            published.append(host_port)
    assert len(published) == len(set(published)), "each service on its own host port"


def test_urls_name_compose_services_and_their_ports(services: dict[str, dict[str, Any]]) -> None:
    cloud_port = default_port("cloud")
    for name, service in services.items():
        env = _env(service)
        for key in ("ELSA_EDGE_CLOUD_URL", "ELSA_CLIENT_CLOUD_URL", "ELSA_CLOUD_URL"):
            if key in env:
                url = urlsplit(env[key])
                assert (url.hostname, url.port) == ("cloud", cloud_port), f"{name}: {key}"
    edges = _by_command(services, "edge")
    names = set()
    for name, service in edges.items():
        env = _env(service)
        url = urlsplit(env["ELSA_EDGE_PUBLIC_URL"])
        assert url.hostname == name, "an edge advertises its own compose service name"
        assert url.port == default_port("edge")
        names.add(env["ELSA_EDGE_NAME"])
    assert len(names) == len(edges), "edge names are distinct (node ids derive from them)"


def test_devices_hold_distinct_partitions_covering_the_run(
    services: dict[str, dict[str, Any]], run_config: RunConfig
) -> None:
    devices = _by_command(services, "client")
    indices = sorted(int(_env(s)["ELSA_CLIENT_PARTITION_INDEX"]) for s in devices.values())
    assert indices == list(range(run_config.num_devices))
    assert len(_by_command(services, "edge")) == run_config.topology.edges


def test_the_cloud_uses_postgres_redis_and_a_volume(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    env = _env(services["cloud"])
    assert env["ELSA_CLOUD_MIGRATE_ON_START"] == "false", "the migrate service migrates"
    database = urlsplit(env["ELSA_CLOUD_DATABASE_URL"])
    assert database.scheme == "postgresql+asyncpg" and database.hostname == "postgres"
    assert env["ELSA_CLOUD_DATABASE_URL"] == _env(services["migrate"])["ELSA_CLOUD_DATABASE_URL"]
    assert database.password == _env(services["postgres"])["POSTGRES_PASSWORD"]
    assert database.username == _env(services["postgres"])["POSTGRES_USER"]
    assert urlsplit(env["ELSA_CLOUD_REDIS_URL"]).hostname == "redis"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["cloud"]["volumes"]}
    assert mounts.get(env["ELSA_CLOUD_ADAPTER_DIR"]) in compose["volumes"], "adapters on a named volume"
    assert any(v.endswith(":/var/lib/postgresql/data") for v in services["postgres"]["volumes"])


def test_secrets_are_shared_and_come_from_the_environment(services: dict[str, dict[str, Any]]) -> None:
    joins = {
        (name, key): value
        for name, service in services.items()
        for key, value in _env(service).items()
        if key.endswith("_JOIN_SECRET")
    }
    assert len(joins) == 1 + 2 + 4
    assert len(set(joins.values())) == 1
    admin = _env(services["cloud"])["ELSA_CLOUD_ADMIN_TOKEN"]
    assert _env(services["submit"])["ELSA_ADMIN_TOKEN"] == admin
    for value in (next(iter(joins.values())), admin, _env(services["postgres"])["POSTGRES_PASSWORD"]):
        assert INTERPOLATION.fullmatch(value), f"{value}: a secret comes from .env"


def test_submit_creates_and_follows_the_demo_run(services: dict[str, dict[str, Any]]) -> None:
    command = services["submit"]["command"]
    assert "--wait" in command, "compose up runs the demo to its end"
    assert "--attach" in command, "a second `up` follows the resumed run instead of adding one"


def test_prometheus_scrapes_every_elsa_service(services: dict[str, dict[str, Any]]) -> None:
    volume = next(v for v in services["prometheus"]["volumes"] if v.endswith("/prometheus.yml:ro"))
    scrape = yaml.safe_load((ROOT / volume.split(":")[0]).read_text(encoding="utf-8"))
    targets = {t for job in scrape["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    serving = {
        f"{name}:{default_port(command)}"
        for name, service in services.items()
        if (command := _command(service)) in SERVING_COMMANDS
    }
    assert targets == serving


def test_env_example_names_settings_and_covers_every_interpolated_variable() -> None:
    assigned, mentioned = _env_example()
    problems = [p for p in (setting_problem(name) for name in sorted(mentioned)) if p]
    assert not problems
    text = COMPOSE.read_text(encoding="utf-8")
    interpolated = {m.group(1): m.group(2) for m in INTERPOLATION.finditer(text)}
    assert interpolated
    assert set(interpolated) <= set(assigned), "every ${VAR} of docker-compose.yml is in .env.example"
    for name, default in interpolated.items():
        assert default is not None, f"${{{name}}} needs a default so that `up` works without .env"
        assert assigned[name] == default, f"{name}: .env.example and the compose default differ"


def test_env_example_documents_every_elsa_variable_of_the_deployment(
    services: dict[str, dict[str, Any]],
) -> None:
    _, mentioned = _env_example()
    used = {key for service in services.values() for key in _env(service) if key.startswith("ELSA_")}
    assert used - mentioned == set()


def test_setting_check_rejects_unknown_names() -> None:
    assert setting_problem("ELSA_EDGE_PUBLIC_URL", "ELSA_EDGE_") is None
    assert setting_problem("ELSA_EDGE_PUBLIC_URLS", "ELSA_EDGE_")
    assert setting_problem("ELSA_EDGE_PUBLIC_URL", "ELSA_CLIENT_")
    assert setting_problem("ELSA_CLIENT_NAME__FIRST", "ELSA_CLIENT_")
    assert setting_problem("ELSA_NODE_NAME")
    assert setting_problem("ELSA_CLOUD_URL", "ELSA_CLOUD_"), "submit's variable is no cloud setting"


def _compose_plugin() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False, timeout=30)
    return probe.returncode == 0


@pytest.mark.skipif(not _compose_plugin(), reason="the docker compose plugin is not installed")
def test_docker_compose_accepts_the_file() -> None:
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
