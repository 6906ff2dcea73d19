"""The Dockerfile and docker-compose stack hang together. Docker itself is not run here (no daemon)."""
from __future__ import annotations

import json
import re
import shlex
import tomllib

from gateway.signing.sources import DEV_CERT_NAME
from tests.deploy.conftest import DEPLOY, PROMETHEUS_DIR, REPO, load_yaml

DOCKERFILE = REPO / "Dockerfile"
COMPOSE = DEPLOY / "docker-compose.yml"
DATA_DIR = "/var/lib/healthbook-gateway"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def _dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    patterns = []
    for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated, line = line.startswith("!"), line.lstrip("!").strip("/")
        regex = re.escape(line).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        patterns.append((negated, re.compile(regex.replace(r"\?", "[^/]") + "$")))
    return patterns


def _in_build_context(relative: str) -> bool:
    """Whether Docker sends this repository path to the build, following .dockerignore's rules."""
    parts = relative.strip("/").split("/")
    prefixes = ["/".join(parts[:end]) for end in range(1, len(parts) + 1)]
    included = True
    for negated, pattern in _dockerignore_patterns():
        if any(pattern.match(prefix) for prefix in prefixes):
            included = negated
    return included


def test_image_is_non_root_slim_python_with_health_check_ports_and_volume() -> None:
    instructions = _instructions()
    assert {args.split()[0] for op, args in instructions if op == "FROM"} == {"python:3.11-slim"}
    users = [args for op, args in instructions if op == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert [op for op, _args in instructions].count("HEALTHCHECK") == 1
    assert {port for op, args in instructions if op == "EXPOSE" for port in args.split()} == {"2575", "8080"}
    assert any(DATA_DIR in args for op, args in instructions if op == "VOLUME")
    assert any("pip install --constraint constraints.txt ." in args for op, args in instructions if op == "RUN")


def _image_health_check() -> list[str]:
    [args] = [args for op, args in _instructions() if op == "HEALTHCHECK"]
    return json.loads(args.split(" CMD ", 1)[1])


def test_one_health_endpoint_story_across_image_compose_and_docs() -> None:
    """Healthy means ready to take messages: the image and compose run the same /readyz check, as documented."""
    image_check = _image_health_check()
    assert image_check[0] == "python" and "/readyz'" in image_check[-1]
    assert load_yaml(COMPOSE)["services"]["gateway"]["healthcheck"]["test"] == ["CMD", *image_check]
    assert 'add_get("/readyz"' in (REPO / "gateway" / "app.py").read_text(encoding="utf-8")
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    assert "## Health endpoints" in readme and "/readyz" in readme and "/healthz" in readme


def _pinned() -> dict[str, str]:
    """constraints.txt as {normalised package name: exact version}."""
    pins = {}
    for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_constraints_pin_every_dependency_exactly() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = [*project["dependencies"], *(dep for deps in project["optional-dependencies"].values() for dep in deps)]
    names = {re.sub(r"[-_.]+", "-", re.split(r"[<>=!~\[; ]", dep, maxsplit=1)[0]).lower() for dep in wanted}
    pins = _pinned()
    assert names - pins.keys() == set(), "run `make constraints` after changing pyproject.toml dependencies"
    assert all(re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", version) for version in pins.values())
    assert "healthbook-gateway" not in pins


def test_make_and_the_image_install_with_the_constraints() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    install = makefile.split("$(STAMP):", 1)[1].split("\n\n", 1)[0]
    assert "constraints.txt" in install.splitlines()[0], "a new constraints.txt reinstalls the .venv"
    assert all("--constraint constraints.txt" in line for line in install.splitlines() if "pip install" in line)
    assert all("--constraint constraints.txt" in args for op, args in _instructions()
               if op == "RUN" and "pip install" in args)


def test_everything_the_image_copies_is_in_the_build_context() -> None:
    for op, args in _instructions():
        if op != "COPY" or args.startswith("--from"):
            continue
        *sources, _destination = shlex.split(args)
        for source in sources:
            assert (REPO / source).exists(), source
            assert _in_build_context(source), f"{source} is excluded by .dockerignore"
            if (REPO / source).is_dir():
                assert _in_build_context(f"{source.rstrip('/')}/__init__.py")


def test_build_context_leaves_out_data_keys_and_development_files() -> None:
    for path in ("var/store.key", "var/dev-cert/dev-key.pem", ".venv/bin/python", ".git/config", "tests/conftest.py",
                 "gateway/__pycache__/app.cpython-311.pyc", "deploy/prometheus/alerts.yml"):
        assert not _in_build_context(path), path
    assert _in_build_context("mappings/vn/anything.csv")


def test_image_serves_the_config_it_ships() -> None:
    instructions = _instructions()
    copied = {shlex.split(args)[-1] for op, args in instructions if op == "COPY" and "config.example.toml" in args}
    command = " ".join(args for op, args in instructions if op == "CMD")
    assert copied == {"/etc/healthbook-gateway/gateway.toml"}
    assert "/etc/healthbook-gateway/gateway.toml" in command


def test_compose_has_the_four_services_with_health_checks() -> None:
    services = load_yaml(COMPOSE)["services"]
    assert set(services) == {"gateway", "emulator", "prometheus", "grafana"}
    assert all("healthcheck" in service for service in services.values())


def test_compose_refers_only_to_files_that_exist_and_declared_volumes() -> None:
    compose = load_yaml(COMPOSE)
    build = compose["services"]["gateway"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source}"
            else:
                assert source in compose["volumes"], f"{name}: undeclared volume {source}"


def test_compose_wiring_matches_prometheus_grafana_and_the_gateway() -> None:
    services = load_yaml(COMPOSE)["services"]
    [job] = [job for job in load_yaml(PROMETHEUS_DIR / "prometheus.yml")["scrape_configs"]
             if job["job_name"] == "healthbook-gateway"]
    targets = {target for config in job["static_configs"] for target in config["targets"]}
    assert targets == {"gateway:8080"}
    assert "8080:8080" in services["gateway"]["ports"]
    assert f"gateway-data:{DATA_DIR}" in services["gateway"]["volumes"]
    assert f"{DATA_DIR}/dev-cert/{DEV_CERT_NAME}" in services["emulator"]["command"]
    providers = load_yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "healthbook-gateway.yml")["providers"]
    grafana_mounts = {volume.split(":")[0]: volume.split(":")[1] for volume in services["grafana"]["volumes"]}
    assert grafana_mounts["./grafana/dashboards"] == providers[0]["options"]["path"]
    assert grafana_mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    assert "./prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]


def test_example_config_keeps_data_in_the_image_volume() -> None:
    text = (DEPLOY / "config.example.toml").read_text(encoding="utf-8")
    assert f'path = "{DATA_DIR}/gateway.db"' in text
