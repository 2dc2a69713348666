"""The container set-up, checked offline: the test profile (deploy/compose.test.yaml), the local-images
override (deploy/compose.local.yaml), the podman driver (deploy/containers/stack.py) and the image builds.

The test profile's services are fed through the real settings reader, so a port that its health check
does not probe, a database URL on another port than PostgreSQL's, a Kafka address the broker does not
advertise, or a port that collides with the shared loopback infrastructure fails here, not in a run.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from deploy.containers import stack
from services.kit.config import Env, ServiceConfig
from tests.unit.deploy.test_manifests import (
    COMPOSE,
    CONNECTS_CALLERS,
    DEPLOY,
    DOCKER,
    PORTS,
    ROOT,
    interpolate,
    k8s_find,
    secret_file_for_test,
    unknown_env_keys,
)

TEST_COMPOSE = DEPLOY / "compose.test.yaml"
LOCAL_OVERRIDE = DEPLOY / "compose.local.yaml"
CONTAINERS = DEPLOY / "containers"
# What other engineers and `make run` use on this machine's loopback: the test stack must not touch it.
SHARED_PORTS = {55432, 9092, 9093, 9090, 8099} | {p for pair in PORTS.values() for p in pair}


@pytest.fixture(scope="module")
def test_compose() -> dict[str, Any]:
    return stack.load(TEST_COMPOSE, {})


def schema_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                           str(path)], capture_output=True, text=True, timeout=120, check=False)


def images_built() -> set[str]:
    """The image names deploy/containers/images.sh builds (with the default tag)."""
    text = (CONTAINERS / "images.sh").read_text().replace("$TAG", "local").replace("$version", "4.1.1")
    names = set(re.findall(r"\b(localhost/adsmon[\w-]*:[\w.]+)", text))
    assert names, "no image names found in images.sh"
    return names


def image_defaults(path: Path) -> dict[str, str]:
    """${ADSMON_*_IMAGE:-default} -> {variable: default} in a compose file."""
    return dict(re.findall(r"\$\{(ADSMON_\w*IMAGE):-([^}]+)\}", path.read_text()))


# ------------------------------------------------------------ schema ---

@pytest.mark.parametrize("path", [TEST_COMPOSE, LOCAL_OVERRIDE], ids=lambda p: p.name)
def test_compose_file_is_valid_against_the_compose_spec(path: Path):
    result = schema_check(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_test_profile_schema_check_rejects_a_misspelt_key(tmp_path: Path):
    broken = tmp_path / "compose.test.yaml"
    broken.write_text(TEST_COMPOSE.read_text().replace("network_mode:", "network_mod:", 1))
    assert schema_check(broken).returncode == 1


def test_the_local_override_names_only_images_that_make_images_builds_and_services_of_compose():
    override = yaml.safe_load(LOCAL_OVERRIDE.read_text())["services"]
    assert set(override) <= set(yaml.safe_load(COMPOSE.read_text())["services"])
    defaults = {interpolate(str(svc["image"])) for svc in override.values()}
    assert defaults <= images_built()
    assert {"postgres", "kafka", "connects", "ads", "billing", "prometheus"} <= set(override)


# ------------------------------------------- the test profile agrees with the code ---

def published_ports(compose: dict[str, Any]) -> dict[str, set[int]]:
    services = compose["services"]
    ports: dict[str, set[int]] = {}
    ports["postgres"] = {int(services["postgres"]["environment"]["PGPORT"])}
    listeners = services["kafka"]["environment"]["KAFKA_LISTENERS"]
    ports["kafka"] = {int(p) for p in re.findall(r":(\d+)", listeners)}
    command = services["sandbox-provider"]["command"]
    ports["sandbox-provider"] = {int(command[command.index("--port") + 1])}
    for name in PORTS:
        env = services[name]["environment"]
        ports[name] = {int(env["ADSMON_GRPC_PORT"]), int(env["ADSMON_METRICS_PORT"])}
        if "ADSMON_BILLING_WEBHOOK_PORT" in env:
            ports[name].add(int(env["ADSMON_BILLING_WEBHOOK_PORT"]))
    return ports


def test_the_test_profile_uses_ports_of_its_own(test_compose):
    ports = published_ports(test_compose)
    every = [p for group in ports.values() for p in group]
    assert len(every) == len(set(every)), f"two services of the test profile share a port: {ports}"
    assert not set(every) & SHARED_PORTS, "the test profile would collide with the shared loopback infra"
    for name, svc in test_compose["services"].items():
        assert svc["network_mode"] == "host", f"{name}: podman here runs host networking only"


@pytest.mark.parametrize("name", list(PORTS))
def test_test_profile_service_config_is_what_the_service_reads(test_compose, name: str, tmp_path: Path):
    services = test_compose["services"]
    svc = services[name]
    env = {k: str(v) for k, v in svc["environment"].items()}
    assert unknown_env_keys(list(env), [name]) == [], f"{name}: env names the code does not read"
    assert env["ADSMON_AUTH_SECRET_FILE"] == f"/run/secrets/{svc['secrets'][0]}"
    env["ADSMON_AUTH_SECRET_FILE"] = secret_file_for_test(tmp_path)
    grpc_port, metrics_port = PORTS[name]
    cfg = ServiceConfig.from_env(name, grpc_port=grpc_port, metrics_port=metrics_port, environ=env)

    assert svc["healthcheck"]["test"] == ["CMD", "python", "/app/healthcheck.py", str(cfg.grpc_port)]
    assert svc["command"] == [f"services.{name}"]
    db = urlsplit(cfg.database_url)
    assert (db.hostname, db.port, db.path) == ("127.0.0.1", int(services["postgres"]["environment"]["PGPORT"]),
                                              f"/{name}")
    assert db.password == services["postgres"]["environment"]["ADSMON_DB_PASSWORD"]
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert advertised == f"PLAINTEXT://{cfg.kafka_bootstrap}"
    assert {"postgres", "kafka"} <= set(svc["depends_on"])
    if name in CONNECTS_CALLERS:
        target = Env(name, env).str("CONNECTS_TARGET", "")
        assert target == f"127.0.0.1:{services['connects']['environment']['ADSMON_GRPC_PORT']}"
        assert svc["depends_on"]["connects"] == {"condition": "service_healthy"}


def test_billing_and_the_sandbox_provider_point_at_each_other(test_compose):
    services = test_compose["services"]
    billing = services["billing"]["environment"]
    command = services["sandbox-provider"]["command"]
    assert command[0] == "services.billing.adapters.sandbox_provider"
    port = command[command.index("--port") + 1]
    assert billing["ADSMON_BILLING_PAYMENT_PROVIDER_URL"] == f"http://127.0.0.1:{port}"
    webhook = urlsplit(command[command.index("--webhook-url") + 1])
    assert webhook.port == int(billing["ADSMON_BILLING_WEBHOOK_PORT"]) and webhook.path == "/webhooks"
    assert port in " ".join(services["sandbox-provider"]["healthcheck"]["test"])


def test_the_test_profile_restarts_crashed_services_and_checks_the_right_ports(test_compose):
    services = test_compose["services"]
    for name in [*PORTS, "sandbox-provider", "postgres", "kafka"]:
        assert services[name]["restart"] in {"always", "unless-stopped", "on-failure"}, name
    pg_port = services["postgres"]["environment"]["PGPORT"]
    assert pg_port in services["postgres"]["healthcheck"]["test"]
    kafka_port = re.search(r":(\d+)$", services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"])
    assert kafka_port and f"/{kafka_port.group(1)}" in " ".join(services["kafka"]["healthcheck"]["test"])
    script = services["postgres"]["volumes"][0].split(":")[0]
    assert (TEST_COMPOSE.parent / script).resolve() == DOCKER / "postgres" / "init-databases.sh"


def test_the_test_profile_images_default_to_official_ones_and_make_selects_the_local_builds():
    defaults = image_defaults(TEST_COMPOSE)
    assert defaults["ADSMON_POSTGRES_IMAGE"] == "postgres:15"
    assert defaults["ADSMON_KAFKA_IMAGE"].startswith("apache/kafka:")
    makefile = (ROOT / "Makefile").read_text()
    chosen = dict(re.findall(r"^test-containers: export (ADSMON_\w*IMAGE) \?= (\S+)$", makefile, re.M))
    assert set(chosen) == set(defaults)
    assert set(chosen.values()) <= images_built()


def test_services_run_as_the_images_user_in_kubernetes_and_in_the_test_stack():
    found = re.search(r"^ARG APP_UID=(\d+)$", (DOCKER / "Dockerfile").read_text(), re.M)
    assert found
    uid = int(found.group(1))
    for name in PORTS:
        pod = k8s_find("Deployment", name)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] == uid
    assert f"os.chown(path, {uid}, {uid})" in (CONTAINERS / "stack.py").read_text()


# ------------------------------------------------------- the podman driver ---

def test_interpolation_follows_compose_rules():
    env = {"SET": "x", "EMPTY": ""}
    assert stack.interpolate("${SET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d} ${UNSET} $$HOME", env) == "x d  d  $HOME"
    assert stack.interpolate({"a": ["${SET}"]}, env) == {"a": ["x"]}


def test_start_order_puts_dependencies_first_and_refuses_a_cycle(test_compose):
    order = stack.start_order(test_compose["services"])
    for name, svc in test_compose["services"].items():
        for dep in stack.depends_on(svc):
            assert order.index(dep) < order.index(name), f"{dep} must start before {name}"
    with pytest.raises(SystemExit, match="cycle"):
        stack.start_order({"a": {"depends_on": ["b"]}, "b": {"depends_on": ["a"]}})


def test_podman_run_arguments_carry_the_compose_settings(test_compose, tmp_path: Path):
    secret = tmp_path / "auth_secret"
    args = stack.run_args("p", "connects", test_compose["services"]["connects"], TEST_COMPOSE.parent,
                          {"auth_secret": secret})
    joined = " ".join(args)
    assert args[:4] == ["run", "-d", "--name", "p-connects"]
    for expected in ("--network host", "--restart unless-stopped", "--read-only", "--tmpfs /tmp",
                     "--cap-drop ALL", "--ulimit nofile=16384:16384", "--ulimit nproc=4096:4096",
                     f"-v {secret}:/run/secrets/auth_secret:ro", "--stop-timeout 20", "-e ADSMON_GRPC_PORT=25051"):
        assert expected in joined, expected
    assert args[-2:] == ["localhost/adsmon:local", "services.connects"]
    pg = stack.run_args("p", "postgres", test_compose["services"]["postgres"], TEST_COMPOSE.parent, {})
    mount = next(a for a in pg if a.endswith("/docker-entrypoint-initdb.d/10-adsmon-databases.sh:ro"))
    assert Path(mount.split(":")[0]).is_absolute() and Path(mount.split(":")[0]).is_file()


def test_the_driver_refuses_what_it_cannot_run():
    with pytest.raises(SystemExit, match="ports"):
        stack.run_args("p", "x", {"image": "i", "ports": ["1:1"]}, ROOT, {})
    with pytest.raises(SystemExit, match="host networking"):
        stack.run_args("p", "x", {"image": "i", "network_mode": "bridge"}, ROOT, {})


def test_health_commands_follow_the_compose_forms():
    assert stack.health_command({"healthcheck": {"test": ["CMD", "a", "b"]}}) == ["a", "b"]
    assert stack.health_command({"healthcheck": {"test": ["CMD-SHELL", "a && b"]}}) == ["sh", "-c", "a && b"]
    assert stack.health_command({"healthcheck": {"test": ["NONE"]}}) is None
    assert stack.health_command({}) is None


def test_every_compose_key_of_the_test_profile_is_handled_by_the_driver(test_compose):
    for name, svc in test_compose["services"].items():
        assert set(svc) <= stack.SUPPORTED_KEYS, name


def test_podman_is_configured_the_way_this_machine_accepts():
    conf = tomllib.loads((CONTAINERS / "containers.conf").read_text())
    assert conf["engine"]["runtime"] == "runc"
    assert set(conf["containers"]["default_ulimits"]) == {"nofile=16384:16384", "nproc=4096:4096"}
    assert conf["containers"]["netns"] == "host"
    assert stack.CONTAINERS_CONF == CONTAINERS / "containers.conf"


def test_the_kafka_image_is_built_from_kafka_sh_cache_and_the_pom_version():
    images = (CONTAINERS / "images.sh").read_text()
    kafka_sh = (DEPLOY / "local" / "kafka.sh").read_text()
    assert 'K_HOME="$ADSMON_LOCAL/kafka"' in kafka_sh and 'K_LIBS="$K_HOME/$K_VERSION/libs"' in kafka_sh
    assert '"$ADSMON_LOCAL/kafka/$version/libs"' in images
    default = re.search(r'K_VERSION="\$\{ADSMON_KAFKA_VERSION:-([\d.]+)\}"', kafka_sh)
    assert default and f"localhost/adsmon-kafka:{default.group(1)}" in images_built()
