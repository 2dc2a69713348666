"""Typed configuration: defaults, overrides, and one clear line for every bad value."""

from __future__ import annotations

import os

import pytest

from services.kit.config import ConfigError, ServiceConfig

SECRET = "k" * 40


def load(**env: str) -> ServiceConfig:
    return ServiceConfig.from_env("connects", grpc_port=50051, metrics_port=9101,
                                  environ={"ADSMON_AUTH_SECRET": SECRET, **env})


def test_defaults_are_local_and_embedded():
    cfg = load()
    assert (cfg.grpc_host, cfg.grpc_port, cfg.metrics_port) == ("127.0.0.1", 50051, 9101)
    assert cfg.database_url.startswith("sqlite:///")
    assert cfg.kafka_bootstrap == "127.0.0.1:9092"


def test_service_specific_setting_wins_over_the_shared_one():
    cfg = load(ADSMON_GRPC_PORT="6000", ADSMON_CONNECTS_GRPC_PORT="6001")
    assert cfg.grpc_port == 6001


def test_secret_is_read_from_a_file(tmp_path):
    path = tmp_path / "s"
    path.write_text("f" * 64 + "\n")
    cfg = ServiceConfig.from_env("ads", grpc_port=1, metrics_port=2,
                                 environ={"ADSMON_AUTH_SECRET_FILE": str(path)})
    assert cfg.auth_secret == b"f" * 64


@pytest.mark.parametrize(("env", "message"), [
    ({"ADSMON_GRPC_PORT": "http"}, "ADSMON_GRPC_PORT='http' is not an integer"),
    ({"ADSMON_CONNECTS_GRPC_PORT": "70000"}, "ADSMON_CONNECTS_GRPC_PORT=70000 is out of range [1, 65535]"),
    ({"ADSMON_DATABASE_URL": "mysql://x"}, "must be a postgresql+psycopg:// or sqlite:/// URL"),
    ({"ADSMON_KAFKA_BOOTSTRAP": "localhost"}, "must be host:port"),
    ({"ADSMON_LOG_LEVEL": "loud"}, "is not one of DEBUG"),
    ({"ADSMON_LOG_JSON": "maybe"}, "is not a boolean"),
    ({"ADSMON_AUTH_SECRET": "short"}, "must be at least 32 bytes"),
    ({"ADSMON_AUTH_SECRET": ""}, "missing setting ADSMON_CONNECTS_AUTH_SECRET_FILE"),
])
def test_bad_values_fail_with_one_line_naming_the_setting(env, message):
    with pytest.raises(ConfigError) as err:
        load(**env)
    assert message in str(err.value)
    assert "\n" not in str(err.value)
    assert SECRET not in str(err.value)


def test_unreadable_secret_file_names_the_setting_not_the_secret(tmp_path):
    with pytest.raises(ConfigError, match="ADSMON_CONNECTS_AUTH_SECRET_FILE: cannot read secret file"):
        ServiceConfig.from_env("connects", grpc_port=1, metrics_port=2,
                               environ={"ADSMON_CONNECTS_AUTH_SECRET_FILE": str(tmp_path / "none")})


def test_relays_and_consumers_built_from_config_use_its_namespaces():
    import sqlalchemy as sa

    from services.kit.bootstrap import consumer, outbox_relay

    cfg = load(ADSMON_KAFKA_TOPIC_PREFIX="staging.", ADSMON_KAFKA_GROUP_PREFIX="blue-")
    engine = sa.create_engine("sqlite://")
    relay = outbox_relay(cfg, engine)
    assert relay.topic_prefix == "staging."
    c = consumer(cfg, engine, "billing-ledger", ["connects.ledger.v1"], lambda *_: None)
    assert (c.group_id, c.topics) == ("blue-billing-ledger", ["staging.connects.ledger.v1"])


def test_a_topic_prefix_with_odd_characters_is_refused():
    with pytest.raises(ConfigError, match="ADSMON_KAFKA_TOPIC_PREFIX"):
        load(ADSMON_KAFKA_TOPIC_PREFIX="a b")


def test_the_token_cli_without_a_secret_is_one_line_and_exit_code_2(monkeypatch, capsys, tmp_path):
    from services.kit import auth

    for key in [k for k in os.environ if "AUTH_SECRET" in k]:
        monkeypatch.delenv(key)
    assert auth.main(["mint", "operator"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "AUTH_SECRET_FILE" in err
    (tmp_path / "s").write_text("x" * 40)
    monkeypatch.setenv("ADSMON_AUTH_SECRET_FILE", str(tmp_path / "s"))
    assert auth.main(["mint", "operator"]) == 0
    assert auth.Authenticator(b"x" * 40).verify(f"Bearer {capsys.readouterr().out.strip()}") == "operator"
