"""Deployment files: schema-valid offline, and consistent with the code they deploy.

Kubernetes manifests (deploy/k8s/) are validated with kubernetes-validate's
bundled schemas, the compose file with the compose-spec schema bundled in
check-jsonschema; no network, no container engine. The cross-file checks feed
each container's effective environment through the real settings reader
(`services.kit.config.ServiceConfig.from_env`), so a misspelt variable, a port
that differs from the code's default, a loopback bind address or a grace
period shorter than the drain sequence fails here rather than in a cluster.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import kubernetes_validate
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.kit.config import Env, ServiceConfig
from services.kit.server import App

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKER = DEPLOY / "docker"
COMPOSE = DEPLOY / "compose.yaml"
K8S_VERSION = "1.30"
NAMESPACE = "adsmon"

# service -> (gRPC port, metrics port): the defaults the code passes to
# ServiceConfig.from_env. Cross-checked below against the services' config
# modules, deploy/run_suite.py, the README and deploy/prometheus/prometheus.yml.
PORTS = {"connects": (50051, 9101), "ads": (50052, 9102), "billing": (50053, 9103)}
# Services that call ConnectsService (ARCHITECTURE.md "Cross-service flows").
CONNECTS_CALLERS = ("ads", "billing")
WILDCARD_HOSTS = {"0.0.0.0", "::", "[::]"}
LOOPBACK = ("127.", "localhost", "::1", "[::1]")
ENV_READ_RE = re.compile(r'\benv\.(str|int|float|bool|port|secret)\(\s*"([A-Z][A-Z0-9_]*)"')


# ---------------------------------------------------------------- helpers ---

def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def k8s_manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def k8s_objects() -> list[dict[str, Any]]:
    return [doc for path in k8s_manifest_files() for doc in load_docs(path)]


def k8s_find(kind: str, name: str) -> dict[str, Any]:
    found = [o for o in k8s_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected exactly one {kind}/{name} in deploy/k8s, found {len(found)}"
    return found[0]


def env_names_read_by_code() -> set[str]:
    """Setting names (without ADSMON_ and service prefix) that the code reads via Env."""
    names: set[str] = set()
    for path in (ROOT / "services").rglob("*.py"):
        for kind, name in ENV_READ_RE.findall(path.read_text()):
            names.add(name)
            if kind == "secret":  # Env.secret reads <NAME>_FILE, then <NAME>
                names.add(f"{name}_FILE")
    return names


def unknown_env_keys(keys: list[str], services: list[str]) -> list[str]:
    """Keys that no service in `services` would read (ADSMON_<SVC>_<NAME> or ADSMON_<NAME>)."""
    known = env_names_read_by_code()
    bad = []
    for key in keys:
        if not key.startswith("ADSMON_"):
            bad.append(key)
            continue
        rest = key.removeprefix("ADSMON_")
        per_service = [rest.removeprefix(f"{s.upper()}_") for s in services
                       if rest.startswith(f"{s.upper()}_")]
        if rest not in known and not any(n in known for n in per_service):
            bad.append(key)
    return bad


def drain_delay_seconds() -> float:
    field = next(f for f in dataclasses.fields(App) if f.name == "drain_delay_seconds")
    return float(field.default)


def prestop_sleep_seconds(container: dict[str, Any]) -> float:
    pre_stop = container.get("lifecycle", {}).get("preStop")
    assert pre_stop, f"{container['name']}: no preStop hook (needed so endpoints drop before SIGTERM)"
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop["exec"]["command"]
    assert Path(command[0]).name == "sleep" and len(command) == 2, f"unexpected preStop {command}"
    return float(command[1])


def prometheus_jobs(config: dict[str, Any]) -> dict[str, tuple[str, dict[str, str]]]:
    jobs = {}
    for job in config["scrape_configs"]:
        (static,) = job["static_configs"]
        (target,) = static["targets"]
        jobs[job["job_name"]] = (target, static.get("labels", {}))
    return jobs


def interpolate(value: str) -> str:
    """Compose interpolation with the variables unset: ${VAR:-default} -> default, $$ -> $."""
    def sub(m: re.Match[str]) -> str:
        body = m.group(1)
        for op in (":-", "-"):
            if op in body:
                return body.split(op, 1)[1]
        raise AssertionError(f"compose variable without a default: ${{{body}}}")
    return re.sub(r"\$\{([^}]+)\}", sub, value).replace("$$", "$")


def duration_seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text):
        total += float(number) * units[unit]
    assert total > 0, f"cannot parse duration {text!r}"
    return total


@pytest.fixture(scope="module")
def dev_ca(tmp_path_factory) -> Path:
    """A development CA and identities made by the project's script (stand-ins for mounted certificates)."""
    directory = tmp_path_factory.mktemp("tls")
    subprocess.run([str(DEPLOY / "local" / "dev-ca.sh"), str(directory)], check=True, capture_output=True)
    return directory


def secret_file_for_test(tmp_path: Path, content: str = "x" * 48) -> str:
    path = tmp_path / "auth_secret"
    path.write_text(content)
    return str(path)


# ------------------------------------------------- the port table is right ---

def test_port_table_matches_the_services_config_modules():
    checked = []
    for name, (grpc_port, metrics_port) in PORTS.items():
        for path in (ROOT / "services" / name).rglob("*.py"):
            for g, m in re.findall(r"grpc_port=(\d+),\s*metrics_port=(\d+)", path.read_text()):
                assert (int(g), int(m)) == (grpc_port, metrics_port), f"{path}: ports differ from PORTS"
                checked.append(name)
    assert checked, "no service config module passes grpc_port=/metrics_port= to ServiceConfig.from_env"


def test_port_table_matches_run_suite_and_readme():
    tree = ast.parse((DEPLOY / "run_suite.py").read_text())
    suite = next(ast.literal_eval(n.value) for n in ast.walk(tree)
                 if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "SERVICES")
    assert suite == PORTS
    readme = (ROOT / "README.md").read_text()
    for name, (grpc_port, metrics_port) in PORTS.items():
        assert re.search(rf"^\| {name} \| 127\.0\.0\.1:{grpc_port} .*\| :{metrics_port}/metrics \|",
                         readme, re.M), f"README's service table disagrees about {name}"


def test_port_table_matches_prometheus_targets():
    jobs = prometheus_jobs(yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text()))
    assert set(jobs) == {f"adsmon-{s}" for s in PORTS}
    for name, (_, metrics_port) in PORTS.items():
        target, labels = jobs[f"adsmon-{name}"]
        assert target.rsplit(":", 1)[1] == str(metrics_port)
        assert labels == {"service": name}


def test_env_name_scan_finds_the_kit_settings():
    # Guards the regex: if it stopped matching, every name check below would be vacuous or noisy.
    assert {"DATABASE_URL", "KAFKA_BOOTSTRAP", "GRPC_HOST", "GRPC_PORT", "METRICS_PORT",
            "AUTH_SECRET_FILE", "SHUTDOWN_GRACE_SECONDS"} <= env_names_read_by_code()


def test_unknown_env_key_detection():
    assert unknown_env_keys(["ADSMON_KAFKA_BOOTSTRAP", "ADSMON_BILLING_DATABASE_URL"], ["billing"]) == []
    assert unknown_env_keys(["ADSMON_KAFKA_BOOTSTRAPS", "ADSMON_BILING_DATABASE_URL", "KAFKA"],
                            ["billing"]) == ["ADSMON_KAFKA_BOOTSTRAPS", "ADSMON_BILING_DATABASE_URL", "KAFKA"]


# ------------------------------------------------------------ Kubernetes ---

@pytest.mark.parametrize("path", k8s_manifest_files(), ids=lambda p: p.name)
def test_k8s_manifest_is_schema_valid(path: Path):
    docs = load_docs(path)
    assert docs, f"{path.name} is empty"
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.name} {doc.get('kind')}/{doc.get('metadata', {}).get('name')}: {exc}")
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, f"{path.name} {doc['kind']}: namespace"


def test_kubernetes_validate_rejects_a_broken_manifest():
    deployment = yaml.safe_load(yaml.safe_dump(k8s_find("Deployment", "connects")))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")  # misspelt field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest_except_secret_templates():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == NAMESPACE
    expected = {p.name for p in k8s_manifest_files() if ".template." not in p.name}
    assert set(kustomization["resources"]) == expected
    assert all((K8S / r).is_file() for r in kustomization["resources"])


def test_secret_templates_hold_placeholders_only():
    secrets = [o for o in k8s_objects() if o["kind"] == "Secret"]
    assert secrets
    for path in k8s_manifest_files():
        kinds = {d["kind"] for d in load_docs(path)}
        assert ("Secret" in kinds) == (".template." in path.name), f"{path.name}: Secrets only in templates"
    for secret in secrets:
        assert "data" not in secret, "templates use stringData placeholders, never encoded data"
        for key, value in secret["stringData"].items():
            assert "REPLACE_ME" in value, f"Secret {secret['metadata']['name']}.{key} is not a placeholder"


def test_configmap_keys_are_settings_the_code_reads():
    for cm in (o for o in k8s_objects() if o["kind"] == "ConfigMap"):
        assert unknown_env_keys(list(cm["data"]), list(PORTS)) == [], cm["metadata"]["name"]


def _container(name: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    deployment = k8s_find("Deployment", name)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return deployment, pod, container


def _k8s_environment(name: str, tmp_path: Path, dev_ca: Path) -> dict[str, str]:
    """The container's environment as the kubelet would build it; the auth secret and TLS files are
    checked to be mounted Secret keys, then replaced by local files (the development CA's) for from_env."""
    _, pod, container = _container(name)
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert set(source) == {"configMapRef"}, "envFrom: only ConfigMaps (Secrets are explicit)"
        env.update(k8s_find("ConfigMap", source["configMapRef"]["name"])["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        ref = item["valueFrom"]
        if "secretKeyRef" in ref:
            secret = k8s_find("Secret", ref["secretKeyRef"]["name"])
            env[item["name"]] = secret["stringData"][ref["secretKeyRef"]["key"]]
        else:
            cm = k8s_find("ConfigMap", ref["configMapKeyRef"]["name"])
            env[item["name"]] = cm["data"][ref["configMapKeyRef"]["key"]]
    # The shared ConfigMap may carry other services' ADSMON_<SVC>_ keys (checked on their own);
    # the container's explicit env must be names this service reads.
    explicit = [item["name"] for item in container.get("env", [])]
    assert unknown_env_keys(explicit, [name]) == [], f"{name}: env names the code does not read"

    key = next((k for k in (f"ADSMON_{name.upper()}_AUTH_SECRET_FILE", "ADSMON_AUTH_SECRET_FILE")
                if k in env), None)
    assert key, f"{name}: no AUTH_SECRET_FILE setting"
    env[key] = secret_file_for_test(tmp_path, _mounted_secret(name, pod, container, Path(env[key]))[1])
    # Mutual TLS: the certificate, key and CA are keys of this service's own TLS Secret, mounted read-only.
    assert env.get("ADSMON_TRANSPORT", "tls") == "tls", f"{name}: production pods run mutual TLS"
    for kind, dev_name in (("CERT", f"{name}.crt"), ("KEY", f"{name}.key"), ("CA", "ca.crt")):
        setting = f"ADSMON_TLS_{kind}_FILE"
        assert setting in env, f"{name}: no {setting}"
        secret_name, _ = _mounted_secret(name, pod, container, Path(env[setting]))
        assert secret_name == f"adsmon-{name}-tls", f"{name}: {setting} is not from its own TLS Secret"
        env[setting] = str(dev_ca / dev_name)  # a real PEM file of the same kind for from_env
    return env


def _mounted_secret(name: str, pod: dict[str, Any], container: dict[str, Any], path: Path) -> tuple[str, str]:
    """(Secret name, placeholder value) of the mounted Secret key that `path` is; fails if it is none."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "secret" in volume and path.parent == Path(mount["mountPath"]):
            items = {i["path"]: i["key"] for i in volume["secret"].get("items", [])}
            secret = k8s_find("Secret", volume["secret"]["secretName"])
            secret_key = items.get(path.name, path.name)
            assert secret_key in secret["stringData"], f"{name}: Secret has no key {secret_key}"
            assert mount.get("readOnly") is True
            return secret["metadata"]["name"], secret["stringData"][secret_key]
    raise AssertionError(f"{name}: {path} is not a file of a mounted Secret volume")


@pytest.mark.parametrize("name", list(PORTS))
def test_k8s_deployment_config_is_what_the_service_reads(name: str, tmp_path: Path, dev_ca: Path):
    grpc_port, metrics_port = PORTS[name]
    env = _k8s_environment(name, tmp_path, dev_ca)
    cfg = ServiceConfig.from_env(name, grpc_port=grpc_port, metrics_port=metrics_port, environ=env)
    deployment, pod, container = _container(name)

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": cfg.grpc_port, "metrics": cfg.metrics_port} == {
        "grpc": grpc_port, "metrics": metrics_port}
    assert cfg.grpc_host in WILDCARD_HOSTS and cfg.metrics_host in WILDCARD_HOSTS, (
        "the code binds 127.0.0.1 by default: probes, Services and Prometheus could not connect")
    assert cfg.database_url.startswith("postgresql")
    assert cfg.database_url.split("?")[0].rsplit("/", 1)[1] == name, "each service has its own database"
    assert not any(h.startswith(LOOPBACK) for h in cfg.kafka_bootstrap.split(","))
    if name in CONNECTS_CALLERS:
        target = Env(name, env).str("CONNECTS_TARGET", "127.0.0.1:50051")
        host, _, port = target.rpartition(":")
        assert int(port) == PORTS["connects"][0] and not host.startswith(LOOPBACK), target
        assert host.split(".")[0] == "connects", "CONNECTS_TARGET must name the connects Service"
    assert container["args"] == [f"services.{name}"]
    annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
    assert annotations.get("prometheus.io/port") == str(cfg.metrics_port)

    # Probes: gRPC health on the serving port through the image's health check, which presents the pod's
    # certificate (kubelet's native gRPC probe cannot do mutual TLS).
    assert cfg.tls is not None
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["exec"]["command"] == ["python", "/app/healthcheck.py", str(cfg.grpc_port)], (
            f"{name} {probe}")

    # Shutdown: preStop sleep, then SIGTERM -> NOT_SERVING -> drain delay -> grace.
    needed = prestop_sleep_seconds(container) + drain_delay_seconds() + cfg.shutdown_grace_seconds
    assert pod["terminationGracePeriodSeconds"] > needed, (
        f"{name}: terminationGracePeriodSeconds {pod['terminationGracePeriodSeconds']} <= {needed}")


@pytest.mark.parametrize("name", list(PORTS))
def test_k8s_deployment_shape(name: str):
    deployment, pod, container = _container(name)
    spec = deployment["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["replicas"] >= 2
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind]), f"{name}: resources.{kind}"
    assert pod["securityContext"]["runAsNonRoot"] is True
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]

    service = k8s_find("Service", name)
    assert service["spec"]["selector"].items() <= labels.items()
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert set(service_ports) == {"grpc", "metrics"}
    for port_name, port in service_ports.items():
        assert port["targetPort"] in (port_name, container_ports[port_name])
        assert port["port"] == container_ports[port_name], "Service port = the code's default port"

    pdb = k8s_find("PodDisruptionBudget", name)
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    allowed = pdb["spec"].get("maxUnavailable")
    assert allowed is not None or pdb["spec"]["minAvailable"] < spec["replicas"], "PDB would block drains"
    assert allowed is None or allowed < spec["replicas"]


def test_k8s_scrape_config_keeps_the_alerting_job_names():
    config = yaml.safe_load((K8S / "monitoring" / "prometheus-scrape.yml").read_text())
    (job,) = config["scrape_configs"]
    relabels = job["relabel_configs"]
    name_label = "__meta_kubernetes_pod_label_app_kubernetes_io_name"
    to_job = [r for r in relabels if r.get("target_label") == "job"]
    assert to_job == [{"source_labels": [name_label], "target_label": "job", "replacement": "adsmon-$1"}]
    assert {"source_labels": [name_label], "target_label": "service"} in relabels
    keep_port = [r for r in relabels if r["source_labels"] == ["__meta_kubernetes_pod_container_port_name"]]
    assert keep_port and keep_port[0]["regex"] == "metrics" and keep_port[0]["action"] == "keep"
    assert job["kubernetes_sd_configs"][0]["namespaces"]["names"] == [NAMESPACE]
    for name in PORTS:
        assert k8s_find("Deployment", name)["spec"]["template"]["metadata"]["labels"][
            "app.kubernetes.io/name"] == name


# --------------------------------------------------------------- compose ---

def test_compose_is_valid_against_the_compose_spec():
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(COMPOSE)], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_schema_check_rejects_a_broken_file(tmp_path: Path):
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("healthcheck:", "healthchek:", 1))
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(broken)], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1, result.stdout + result.stderr


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.mark.parametrize("name", list(PORTS))
def test_compose_service_config_is_what_the_service_reads(compose, name: str, tmp_path: Path, dev_ca: Path):
    grpc_port, metrics_port = PORTS[name]
    svc = compose["services"][name]
    env = {k: interpolate(str(v)) for k, v in svc["environment"].items()}
    assert unknown_env_keys(list(env), [name]) == [], f"{name}: env names the code does not read"

    # The auth secret: a compose secret mounted at /run/secrets/<name>, from the file make writes.
    secret_path = Path(env["ADSMON_AUTH_SECRET_FILE"])
    assert secret_path.parent == Path("/run/secrets")
    assert secret_path.name in svc["secrets"]
    assert compose["secrets"][secret_path.name]["file"] == "../.local/secrets/auth_secret"
    assert "$(LOCAL)/secrets/auth_secret" in (ROOT / "Makefile").read_text()
    env["ADSMON_AUTH_SECRET_FILE"] = secret_file_for_test(tmp_path)
    # Mutual TLS: the service's certificate and key and the CA, compose secrets from what dev-ca.sh writes.
    assert env.get("ADSMON_TRANSPORT", "tls") == "tls"
    for kind, dev_name in (("CERT", f"{name}.crt"), ("KEY", f"{name}.key"), ("CA", "ca.crt")):
        path = Path(env[f"ADSMON_TLS_{kind}_FILE"])
        assert path.parent == Path("/run/secrets") and path.name in svc["secrets"]
        assert compose["secrets"][path.name]["file"] == f"../.local/secrets/tls/{dev_name}"
        env[f"ADSMON_TLS_{kind}_FILE"] = str(dev_ca / dev_name)

    cfg = ServiceConfig.from_env(name, grpc_port=grpc_port, metrics_port=metrics_port, environ=env)
    assert (cfg.grpc_port, cfg.metrics_port) == (grpc_port, metrics_port) and cfg.tls is not None
    assert cfg.grpc_host in WILDCARD_HOSTS and cfg.metrics_host in WILDCARD_HOSTS
    published = {int(p.rsplit(":", 1)[1]) for p in svc["ports"]}
    assert published == {cfg.grpc_port, cfg.metrics_port}
    assert svc["healthcheck"]["test"] == ["CMD", "python", "/app/healthcheck.py", str(cfg.grpc_port)]
    assert svc["command"] == [f"services.{name}"]
    build = svc["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKER / "Dockerfile"

    # Infra by compose service name; its own database on the compose PostgreSQL.
    assert re.match(rf"postgresql\+psycopg://{name}:[^@]+@postgres:5432/{name}$", cfg.database_url)
    advertised = compose["services"]["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert f"//{cfg.kafka_bootstrap}" in advertised
    assert {"postgres", "kafka-init"} <= set(svc["depends_on"])
    if name in CONNECTS_CALLERS:
        assert Env(name, env).str("CONNECTS_TARGET", "127.0.0.1:50051") == f"connects:{PORTS['connects'][0]}"

    stop = duration_seconds(svc["stop_grace_period"])
    assert stop > cfg.shutdown_grace_seconds + drain_delay_seconds(), f"{name}: stop_grace_period {stop}"
    assert svc["read_only"] is True and interpolate(svc["user"]).split(":")[0] not in {"0", "root"}


def test_compose_postgres_creates_one_database_per_service(compose):
    script = compose["services"]["postgres"]["volumes"][1].split(":")[0]
    text = (COMPOSE.parent / script).resolve().read_text()
    (names,) = re.findall(r"^for db in ([a-z ]+); do$", text, re.M)
    assert set(names.split()) == set(PORTS)


def test_compose_prometheus_scrapes_like_the_local_config(compose):
    prom = compose["services"]["prometheus"]
    mounts = dict(v.rsplit(":ro", 1)[0].split(":", 1) for v in prom["volumes"] if v.startswith("./"))
    config_path = (COMPOSE.parent / next(s for s, t in mounts.items()
                                         if t == "/etc/prometheus/prometheus.yml")).resolve()
    config = yaml.safe_load(config_path.read_text())
    local = prometheus_jobs(yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text()))
    jobs = prometheus_jobs(config)
    assert set(jobs) == set(local)
    for job, (target, labels) in jobs.items():
        name = job.removeprefix("adsmon-")
        assert target == f"{name}:{PORTS[name][1]}" and labels == local[job][1]
    rules_target = mounts["./prometheus"]
    for rule_file in config["rule_files"]:
        assert rule_file.startswith(rules_target + "/")
        assert (DEPLOY / "prometheus" / rule_file.removeprefix(rules_target + "/")).is_file()
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: deploy/local/prometheus.sh install (make test does it)"
    result = subprocess.run([promtool, "check", "config", "--syntax-only", str(config_path)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_grafana_provisions_the_generated_dashboards(compose):
    grafana = compose["services"]["grafana"]
    mounts = dict(v.rsplit(":ro", 1)[0].split(":", 1) for v in grafana["volumes"] if v.startswith("./"))
    provisioning = (COMPOSE.parent / next(s for s, t in mounts.items()
                                          if t == "/etc/grafana/provisioning")).resolve()
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "adsmon.yaml").read_text())["providers"]
    dashboards_src = next(s for s, t in mounts.items() if t == provider["options"]["path"])
    assert (COMPOSE.parent / dashboards_src).resolve() == DEPLOY / "grafana" / "dashboards"
    assert list((DEPLOY / "grafana" / "dashboards").glob("*.json"))
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert source["url"] == "http://prometheus:9090" and "prometheus" in compose["services"]


# ---------------------------------------------------------------- image ---

def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (DOCKER / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
            for line in lines if line and not line.startswith("#")]


def test_dockerfile_builds_the_runtime_the_code_expects():
    ins = dockerfile_instructions()
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.M)
    stages = [a.split() for i, a in ins if i == "FROM"]
    assert len(stages) >= 2 and stages[0][0] == "${PYTHON_IMAGE}"
    for n, stage in enumerate(stages[1:], 1):  # each from the Python image or an earlier stage
        assert stage[0] == "${PYTHON_IMAGE}" or stage[0] in {s[-1] for s in stages[:n]}, stage
    assert [a for i, a in ins if i == "ENTRYPOINT"][-1] == '["python", "-m"]'
    assert [a for i, a in ins if i == "CMD"][-1] == '["services.connects"]'
    user = [a for i, a in ins if i == "USER"][-1]
    assert user.split(":")[0] not in {"0", "root"}
    assert re.search(r"\bPYTHONPATH=/app:/app/gen\b", text)
    assert re.search(r"pip install (\"\$@\" )?-r requirements\.lock", text)  # the lock file, exactly
    exposed = {int(p) for i, a in ins if i == "EXPOSE" for p in a.split()}
    assert exposed == {p for pair in PORTS.values() for p in pair}

    # Stubs generated like the Makefile's `protos` target: same generators, into /app/gen.
    make_outs = set(re.findall(r"--(\w+)_out=gen\b", (ROOT / "Makefile").read_text()))
    image_outs = set(re.findall(r"--(\w+)_out=/app/gen\b", text))
    assert make_outs and image_outs == make_outs
    assert "-m grpc_tools.protoc -I protos" in text


def test_dockerfile_copies_only_what_exists_and_is_not_ignored():
    patterns = [line.strip() for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", "the ignore file is an allow-list"
    allowed = [p[1:].rstrip("/") for p in patterns if p.startswith("!")]
    for instruction, args in dockerfile_instructions():
        if instruction != "COPY" or "--from=" in args:
            continue
        *sources, _dest = args.split()
        for source in sources:
            source = source.rstrip("/")
            assert (ROOT / source).exists(), f"COPY {source}: not in the repo"
            assert any(source == a or source.startswith(a + "/") for a in allowed), (
                f"COPY {source}: excluded by Dockerfile.dockerignore")


# ------------------------------------------------------- the health check ---

@pytest.fixture
def health_server() -> Iterator[tuple[int, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port, servicer
    finally:
        server.stop(None)


def run_healthcheck(port: int, **env: str) -> int:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ADSMON_")}
    environ.update(env or {"ADSMON_TRANSPORT": "plaintext"})
    return subprocess.run([sys.executable, str(DOCKER / "healthcheck.py"), str(port)], env=environ,
                          capture_output=True, timeout=30, check=False).returncode


def test_healthcheck_presents_the_containers_certificate_under_mutual_tls(dev_ca: Path):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    creds = grpc.ssl_server_credentials([((dev_ca / "ads.key").read_bytes(), (dev_ca / "ads.crt").read_bytes())],
                                        root_certificates=(dev_ca / "ca.crt").read_bytes(), require_client_auth=True)
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    try:
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        own = {"ADSMON_TLS_CERT_FILE": str(dev_ca / "ads.crt"), "ADSMON_TLS_KEY_FILE": str(dev_ca / "ads.key"),
               "ADSMON_TLS_CA_FILE": str(dev_ca / "ca.crt")}
        assert run_healthcheck(port, **own) == 0
        assert run_healthcheck(port, ADSMON_TRANSPORT="plaintext") == 1, "a plaintext probe got through"
        assert run_healthcheck(port, ADSMON_TRANSPORT="tls") == 1, "no certificate files: unhealthy, not a crash"
    finally:
        server.stop(None)


def test_healthcheck_follows_grpc_health(health_server):
    port, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert run_healthcheck(port) == 0
    servicer.enter_graceful_shutdown()  # what serve() does on SIGTERM
    assert run_healthcheck(port) == 1


def test_healthcheck_fails_when_nothing_listens():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free_port = sock.getsockname()[1]
    assert run_healthcheck(free_port) == 1
