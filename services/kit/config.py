"""Typed settings read once from the environment, failing fast with one clear line.

Each service builds its own frozen dataclass from these readers (warehouse
`config.py` style): `ADSMON_<SERVICE>_<NAME>` wins over `ADSMON_<NAME>`, which
wins over the default. Every value is validated here, not where it is used.
"""

from __future__ import annotations

import builtins
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.kit.startup import StartupError
from services.kit.tls import DEFAULT_TRUST_DOMAIN, TlsFiles


class ConfigError(StartupError):
    """A setting is missing or malformed."""


class Env:
    """Reads `ADSMON_<SERVICE>_<NAME>` then `ADSMON_<NAME>` from a mapping (os.environ)."""

    def __init__(self, service: str, environ: Mapping[str, str] | None = None) -> None:
        self.service = service
        self.environ = os.environ if environ is None else environ

    def _lookup(self, name: str) -> tuple[str, str | None]:
        for key in (f"ADSMON_{self.service.upper()}_{name}", f"ADSMON_{name}"):
            if key in self.environ:
                return key, self.environ[key].strip()
        return f"ADSMON_{self.service.upper()}_{name}", None

    # Method names shadow the builtins inside the class body: annotations say builtins.<type>.
    def str(self, name: builtins.str, default: builtins.str | None = None, *,
            required: builtins.bool = False) -> builtins.str:
        key, value = self._lookup(name)
        if value:
            return value
        if required or default is None:
            raise ConfigError(f"missing setting {key}")
        return default

    def int(self, name: builtins.str, default: builtins.int, *, lo: builtins.int, hi: builtins.int) -> builtins.int:
        key, value = self._lookup(name)
        if not value:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"{key}={value!r} is not an integer") from None
        if not lo <= number <= hi:
            raise ConfigError(f"{key}={number} is out of range [{lo}, {hi}]")
        return number

    def float(self, name: builtins.str, default: builtins.float, *, lo: builtins.float,
              hi: builtins.float) -> builtins.float:
        key, value = self._lookup(name)
        if not value:
            return default
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{key}={value!r} is not a number") from None
        if not lo <= number <= hi:
            raise ConfigError(f"{key}={number} is out of range [{lo}, {hi}]")
        return number

    def bool(self, name: builtins.str, default: builtins.bool) -> builtins.bool:
        key, value = self._lookup(name)
        if not value:
            return default
        if value.lower() in {"1", "true", "yes", "on"}:
            return True
        if value.lower() in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{key}={value!r} is not a boolean (true/false)")

    def port(self, name: builtins.str, default: builtins.int) -> builtins.int:
        return self.int(name, default, lo=1, hi=65535)

    def secret(self, name: builtins.str) -> bytes:
        """A secret from `<NAME>_FILE` (preferred) or `<NAME>`; never echoed in errors."""
        file_key, path = self._lookup(f"{name}_FILE")
        if path:
            try:
                data = Path(path).read_bytes().strip()
            except OSError as exc:
                raise ConfigError(f"{file_key}: cannot read secret file ({exc.strerror})") from None
        else:
            key, value = self._lookup(name)
            if not value:
                raise ConfigError(f"missing setting {file_key} (or {key})")
            data = value.encode()
        if len(data) < 32:
            raise ConfigError(f"ADSMON_{name} must be at least 32 bytes long")
        return data


def _topic_prefix(value: str) -> str:
    if value and not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", value):
        raise ConfigError(f"ADSMON_KAFKA_TOPIC_PREFIX={value!r} may only contain letters, digits, '.', '_', '-'")
    return value


KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_SSL", "SASL_PLAINTEXT")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _instance_id(value: str) -> str:
    if value and not re.fullmatch(r"[A-Za-z0-9._-]{1,200}", value):
        raise ConfigError(f"ADSMON_KAFKA_INSTANCE_ID={value!r} may only contain letters, digits, '.', '_', '-'")
    return value


@dataclass(frozen=True)
class KafkaSecurity:
    """How Kafka clients authenticate and encrypt (PLAINTEXT, nothing else, by default locally).

    The SASL password is read from a file at startup and kept out of repr() and logs.
    """

    protocol: str = "PLAINTEXT"
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)

    def client_kwargs(self) -> dict[str, object]:
        """The kafka-python keyword arguments (empty for PLAINTEXT: the library's defaults)."""
        kwargs: dict[str, object] = {}
        if self.protocol == "PLAINTEXT":
            return kwargs
        kwargs["security_protocol"] = self.protocol
        if self.protocol in {"SSL", "SASL_SSL"}:
            kwargs["ssl_check_hostname"] = True
            for key, value in (("ssl_cafile", self.ca_file), ("ssl_certfile", self.cert_file),
                               ("ssl_keyfile", self.key_file)):
                if value:
                    kwargs[key] = value
        if self.protocol.startswith("SASL_"):
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password
        return kwargs

    @classmethod
    def from_env(cls, env: Env) -> KafkaSecurity:
        """Read ADSMON_KAFKA_SECURITY_PROTOCOL and friends; a bad combination is one ConfigError line."""
        prefix = f"ADSMON_{env.service.upper()}_"
        protocol = env.str("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").upper()
        if protocol not in KAFKA_PROTOCOLS:
            raise ConfigError(f"{prefix}KAFKA_SECURITY_PROTOCOL={protocol!r} is not one of "
                              f"{', '.join(KAFKA_PROTOCOLS)}")
        ca, cert, key = (env.str(f"KAFKA_SSL_{n}_FILE", "") or None for n in ("CA", "CERT", "KEY"))
        mechanism = env.str("KAFKA_SASL_MECHANISM", "").upper() or None
        username = env.str("KAFKA_SASL_USERNAME", "") or None
        password_file = env.str("KAFKA_SASL_PASSWORD_FILE", "") or None
        if env.str("KAFKA_SASL_PASSWORD", ""):
            raise ConfigError(f"{prefix}KAFKA_SASL_PASSWORD is not read: put the password in a file "
                              "named by KAFKA_SASL_PASSWORD_FILE")
        uses_ssl = protocol in {"SSL", "SASL_SSL"}
        uses_sasl = protocol.startswith("SASL_")
        if not uses_ssl and (ca or cert or key):
            raise ConfigError(f"KAFKA_SSL_*_FILE settings need KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL, "
                              f"not {protocol}")
        if bool(cert) != bool(key):
            raise ConfigError("KAFKA_SSL_CERT_FILE and KAFKA_SSL_KEY_FILE go together (a client certificate "
                              "needs its key)")
        for name, path in (("CA", ca), ("CERT", cert), ("KEY", key)):
            if path and not Path(path).is_file():
                raise ConfigError(f"KAFKA_SSL_{name}_FILE={path!r} is not a readable file")
        if not uses_sasl:
            if mechanism or username or password_file:
                raise ConfigError(f"KAFKA_SASL_* settings need KAFKA_SECURITY_PROTOCOL=SASL_SSL or "
                                  f"SASL_PLAINTEXT, not {protocol}")
            return cls(protocol, ca, cert, key)
        if mechanism not in SASL_MECHANISMS:
            raise ConfigError(f"KAFKA_SASL_MECHANISM={mechanism!r} must be one of {', '.join(SASL_MECHANISMS)} "
                              f"with {protocol}")
        if not username or not password_file:
            raise ConfigError(f"{protocol} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD_FILE")
        try:
            password = Path(password_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"KAFKA_SASL_PASSWORD_FILE: cannot read the password file ({exc.strerror})") from None
        if not password:
            raise ConfigError("KAFKA_SASL_PASSWORD_FILE names an empty file")
        return cls(protocol, ca, cert, key, mechanism, username, password)


TRANSPORTS = ("tls", "plaintext")


def transport_from_env(env: Env, name: str) -> tuple[str, TlsFiles | None]:
    """ADSMON_TRANSPORT (tls, the default, or plaintext) and, for tls, identity `name`'s certificate files.

    Each file is ADSMON_[<SVC>_]TLS_CERT_FILE / TLS_KEY_FILE / TLS_CA_FILE, else `<name>.crt`, `<name>.key`,
    `ca.crt` in ADSMON_[<SVC>_]TLS_DIR. With tls and no files the process does not start: plaintext (bearer
    tokens, no encryption) must be asked for, and only for a local run.
    """
    svc = env.service.upper()
    transport = env.str("TRANSPORT", "tls").lower()
    if transport not in TRANSPORTS:
        raise ConfigError(f"ADSMON_TRANSPORT={transport!r} is not one of {', '.join(TRANSPORTS)}")
    if transport == "plaintext":
        return transport, None
    directory = env.str("TLS_DIR", "")

    def in_dir(file_name: str) -> str:
        return str(Path(directory) / file_name) if directory else ""

    paths = {"CERT": env.str("TLS_CERT_FILE", "") or in_dir(f"{name}.crt"),
             "KEY": env.str("TLS_KEY_FILE", "") or in_dir(f"{name}.key"),
             "CA": env.str("TLS_CA_FILE", "") or in_dir("ca.crt")}
    if not any(paths.values()):
        raise ConfigError(
            f"no TLS certificate for {name}: set ADSMON_TLS_DIR (a directory holding {name}.crt, {name}.key and "
            f"ca.crt; `make secrets` makes one in .local/secrets/tls) or ADSMON_{svc}_TLS_CERT_FILE, "
            f"ADSMON_{svc}_TLS_KEY_FILE and ADSMON_{svc}_TLS_CA_FILE; or, for a local run only, "
            "ADSMON_TRANSPORT=plaintext")
    missing = [f"ADSMON_{svc}_TLS_{k}_FILE" for k, v in paths.items() if not v]
    if missing:
        raise ConfigError(f"TLS needs a certificate, its key and a CA: missing {', '.join(missing)} "
                          "(or ADSMON_TLS_DIR)")
    files = TlsFiles(paths["CERT"], paths["KEY"], paths["CA"])
    files.read()  # unreadable or not PEM: one line now, not a handshake failure later
    return transport, files


@dataclass(frozen=True)
class ServiceConfig:
    """What every service needs to start; services embed it in their own config."""

    service: str
    grpc_host: str
    grpc_port: int
    metrics_host: str
    metrics_port: int
    database_url: str
    kafka_bootstrap: str
    auth_secret: bytes
    log_level: str
    log_json: bool
    shutdown_grace_seconds: float
    db_pool_size: int
    kafka_group_prefix: str = ""
    kafka_topic_prefix: str = ""
    # SO_REUSEPORT on the gRPC port: several processes share it (the kernel spreads connections). Off by
    # default: a second server on a taken port is then an error, not a silent neighbour.
    grpc_reuse_port: bool = False
    # >1: that many serving processes share the gRPC port (services.kit.server.run_processes).
    processes: int = 1
    # false: run `python -m services.<svc> relay` beside the servers (its own GIL and CPU).
    relay_in_process: bool = True
    # The interpreter's GIL switch interval (sys.setswitchinterval), set at process start by
    # services.kit.server.tune_process. Python's default, 5 ms, lets the group-commit worker thread hold the
    # GIL for up to 5 ms while the event loop has a reply ready: 0.5 ms cut Spend's p99 at half load from
    # 27.6-33.1 ms to 21.3-22.6 ms in alternated runs (docs/performance.md).
    gil_switch_interval_ms: float = 0.5
    # Freeze the objects alive after start-up out of the garbage collector's generations (gc.freeze):
    # the full collections under load then do not walk the modules, stubs and SQLAlchemy metadata.
    gc_freeze: bool = True
    kafka_security: KafkaSecurity = KafkaSecurity()
    # Static group membership (group.instance.id): a restarted consumer gets its partitions back at
    # once. Empty: dynamic membership. Must be unique per consumer process in a group.
    kafka_instance_id: str = ""
    kafka_session_timeout_ms: int = 10_000
    # Input limits and overload: requests/responses up to this size; any request string up to this length;
    # more RPCs than this in flight are shed with RESOURCE_EXHAUSTED OVERLOADED (0: no limit).
    max_message_bytes: int = 4 * 1024 * 1024
    max_string_length: int = 4096
    max_concurrent_rpcs: int = 256
    # How services talk: "tls" (mutual TLS; `tls` is this service's certificate, key and CA, used to serve
    # and for its outgoing calls; the caller is the client certificate's identity) or "plaintext" (bearer
    # tokens signed with auth_secret; local runs only). from_env defaults to tls.
    transport: str = "plaintext"
    tls: TlsFiles | None = None
    tls_trust_domain: str = DEFAULT_TRUST_DOMAIN

    def consumer_group(self, name: str) -> str:
        """The Kafka consumer group for `name`, namespaced by ADSMON_KAFKA_GROUP_PREFIX (e.g. per test run)."""
        return f"{self.kafka_group_prefix}{name}"

    @classmethod
    def from_env(
        cls, service: str, *, grpc_port: int, metrics_port: int,
        environ: Mapping[str, str] | None = None,
    ) -> ServiceConfig:
        env = Env(service, environ)
        level = env.str("LOG_LEVEL", "INFO").upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ConfigError(f"ADSMON_LOG_LEVEL={level!r} is not one of DEBUG, INFO, WARNING, ERROR")
        database_url = env.str("DATABASE_URL", f"sqlite:///.local/{service}.db")
        if not database_url.startswith(("postgresql", "sqlite")):
            raise ConfigError(
                f"ADSMON_{service.upper()}_DATABASE_URL must be a postgresql+psycopg:// "
                "or sqlite:/// URL"
            )
        bootstrap = env.str("KAFKA_BOOTSTRAP", "127.0.0.1:9092")
        for hostport in bootstrap.split(","):
            host, _, port = hostport.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(f"ADSMON_KAFKA_BOOTSTRAP={bootstrap!r} must be host:port[,host:port]")
        transport, tls = transport_from_env(env, service)
        return cls(
            service=service,
            grpc_host=env.str("GRPC_HOST", "127.0.0.1"),
            grpc_port=env.port("GRPC_PORT", grpc_port),
            metrics_host=env.str("METRICS_HOST", "127.0.0.1"),
            metrics_port=env.port("METRICS_PORT", metrics_port),
            database_url=database_url,
            kafka_bootstrap=bootstrap,
            auth_secret=env.secret("AUTH_SECRET"),
            log_level=level,
            log_json=env.bool("LOG_JSON", True),
            shutdown_grace_seconds=env.float("SHUTDOWN_GRACE_SECONDS", 10.0, lo=0.0, hi=300.0),
            db_pool_size=env.int("DB_POOL_SIZE", 10, lo=1, hi=200),
            kafka_group_prefix=env.str("KAFKA_GROUP_PREFIX", ""),
            kafka_topic_prefix=_topic_prefix(env.str("KAFKA_TOPIC_PREFIX", "")),
            grpc_reuse_port=env.bool("GRPC_REUSE_PORT", False),
            processes=env.int("PROCESSES", 1, lo=1, hi=64),
            relay_in_process=env.bool("RELAY_IN_PROCESS", True),
            gil_switch_interval_ms=env.float("GIL_SWITCH_INTERVAL_MS", 0.5, lo=0.05, hi=100.0),
            gc_freeze=env.bool("GC_FREEZE", True),
            kafka_security=KafkaSecurity.from_env(env),
            kafka_instance_id=_instance_id(env.str("KAFKA_INSTANCE_ID", "")),
            kafka_session_timeout_ms=env.int("KAFKA_SESSION_TIMEOUT_MS", 10_000, lo=6_000, hi=300_000),
            max_message_bytes=env.int("MAX_MESSAGE_BYTES", 4 * 1024 * 1024, lo=1024, hi=64 * 1024 * 1024),
            max_string_length=env.int("MAX_STRING_LENGTH", 4096, lo=16, hi=1024 * 1024),
            max_concurrent_rpcs=env.int("MAX_CONCURRENT_RPCS", 256, lo=0, hi=100_000),
            transport=transport,
            tls=tls,
            tls_trust_domain=env.str("TLS_TRUST_DOMAIN", DEFAULT_TRUST_DOMAIN),
        )
