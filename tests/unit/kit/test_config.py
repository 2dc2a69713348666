"""Typed configuration: defaults, overrides, and one clear line for every bad value."""

from __future__ import annotations

import os
import sys

import pytest

from services.kit.config import ConfigError, ServiceConfig

SECRET = "k" * 40


def load(**env: str) -> ServiceConfig:
    return ServiceConfig.from_env("connects", grpc_port=50051, metrics_port=9101,
                                  environ={"ADSMON_TRANSPORT": "plaintext", "ADSMON_AUTH_SECRET": SECRET, **env})


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
                                 environ={"ADSMON_TRANSPORT": "plaintext", "ADSMON_AUTH_SECRET_FILE": str(path)})
    assert cfg.auth_secret == b"f" * 64


@pytest.mark.parametrize(("env", "message"), [
    ({"ADSMON_GRPC_PORT": "http"}, "ADSMON_GRPC_PORT='http' is not an integer"),
    ({"ADSMON_CONNECTS_GRPC_PORT": "70000"}, "ADSMON_CONNECTS_GRPC_PORT=70000 is out of range [1, 65535]"),
    ({"ADSMON_DATABASE_URL": "mysql://x"}, "must be a postgresql+psycopg:// or sqlite:/// URL"),
    ({"ADSMON_KAFKA_BOOTSTRAP": "localhost"}, "must be host:port"),
    ({"ADSMON_LOG_LEVEL": "loud"}, "is not one of DEBUG"),
    ({"ADSMON_LOG_JSON": "maybe"}, "is not a boolean"),
    ({"ADSMON_TRANSPORT": "plaintext", "ADSMON_AUTH_SECRET": "short"}, "must be at least 32 bytes"),
    ({"ADSMON_TRANSPORT": "plaintext", "ADSMON_AUTH_SECRET": ""}, "missing setting ADSMON_CONNECTS_AUTH_SECRET_FILE"),
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
                               environ={"ADSMON_TRANSPORT": "plaintext",
                                        "ADSMON_CONNECTS_AUTH_SECRET_FILE": str(tmp_path / "none")})


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


def test_the_gil_switch_interval_is_half_a_millisecond_unless_set_and_is_applied_at_process_start():
    from services.kit.server import tune_process

    assert load().gil_switch_interval_ms == 0.5
    cfg = load(ADSMON_GIL_SWITCH_INTERVAL_MS="2")
    before = sys.getswitchinterval()
    try:
        tune_process(cfg)
        assert sys.getswitchinterval() == pytest.approx(0.002)
    finally:
        sys.setswitchinterval(before)


def test_a_gil_switch_interval_out_of_range_is_refused_naming_the_setting():
    with pytest.raises(ConfigError, match="ADSMON_CONNECTS_GIL_SWITCH_INTERVAL_MS"):
        load(ADSMON_CONNECTS_GIL_SWITCH_INTERVAL_MS="0")


def test_gc_freeze_is_on_by_default_and_can_be_turned_off():
    assert load().gc_freeze is True
    assert load(ADSMON_GC_FREEZE="false").gc_freeze is False
# -- Kafka security ------------------------------------------------------------------------------

def test_kafka_security_is_plaintext_by_default_and_adds_no_client_options():
    cfg = load()
    assert cfg.kafka_security.protocol == "PLAINTEXT"
    assert cfg.kafka_security.client_kwargs() == {}


def test_kafka_ssl_with_a_client_certificate_maps_onto_kafka_python_options(tmp_path):
    ca, cert, key = (tmp_path / n for n in ("ca.pem", "c.pem", "k.pem"))
    for path in (ca, cert, key):
        path.write_text("x")
    cfg = load(ADSMON_KAFKA_SECURITY_PROTOCOL="ssl", ADSMON_KAFKA_SSL_CA_FILE=str(ca),
               ADSMON_KAFKA_SSL_CERT_FILE=str(cert), ADSMON_KAFKA_SSL_KEY_FILE=str(key))
    assert cfg.kafka_security.client_kwargs() == {
        "security_protocol": "SSL", "ssl_check_hostname": True,
        "ssl_cafile": str(ca), "ssl_certfile": str(cert), "ssl_keyfile": str(key),
    }


def test_kafka_sasl_scram_reads_the_password_from_its_file_and_keeps_it_out_of_repr(tmp_path):
    secret = tmp_path / "pw"
    password = f"pw-{os.urandom(8).hex()}"
    secret.write_text(password + "\n")
    cfg = load(ADSMON_KAFKA_SECURITY_PROTOCOL="SASL_SSL", ADSMON_KAFKA_SASL_MECHANISM="scram-sha-512",
               ADSMON_KAFKA_SASL_USERNAME="connects", ADSMON_KAFKA_SASL_PASSWORD_FILE=str(secret))
    assert cfg.kafka_security.client_kwargs() == {
        "security_protocol": "SASL_SSL", "ssl_check_hostname": True, "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "connects", "sasl_plain_password": password,
    }
    assert password not in repr(cfg)


def test_kafka_sasl_plaintext_with_plain_needs_no_tls_files(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("hunter2")
    cfg = load(ADSMON_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT", ADSMON_KAFKA_SASL_MECHANISM="PLAIN",
               ADSMON_KAFKA_SASL_USERNAME="ads", ADSMON_KAFKA_SASL_PASSWORD_FILE=str(secret))
    assert cfg.kafka_security.client_kwargs()["security_protocol"] == "SASL_PLAINTEXT"
    assert "ssl_check_hostname" not in cfg.kafka_security.client_kwargs()


@pytest.mark.parametrize(("env", "message"), [
    ({"ADSMON_KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL='TLS' is not one of"),
    ({"ADSMON_KAFKA_SSL_CA_FILE": "/etc/hosts"}, "need KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL, not PLAINTEXT"),
    ({"ADSMON_KAFKA_SECURITY_PROTOCOL": "SSL", "ADSMON_KAFKA_SSL_CERT_FILE": "/etc/hosts"},
     "KAFKA_SSL_CERT_FILE and KAFKA_SSL_KEY_FILE go together"),
    ({"ADSMON_KAFKA_SECURITY_PROTOCOL": "SSL", "ADSMON_KAFKA_SSL_CA_FILE": "/nonexistent/ca.pem"},
     "KAFKA_SSL_CA_FILE='/nonexistent/ca.pem' is not a readable file"),
    ({"ADSMON_KAFKA_SECURITY_PROTOCOL": "SSL", "ADSMON_KAFKA_SASL_USERNAME": "u"},
     "KAFKA_SASL_* settings need KAFKA_SECURITY_PROTOCOL=SASL_SSL or SASL_PLAINTEXT, not SSL"),
    ({"ADSMON_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "ADSMON_KAFKA_SASL_MECHANISM": "GSSAPI"},
     "KAFKA_SASL_MECHANISM='GSSAPI' must be one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
    ({"ADSMON_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "ADSMON_KAFKA_SASL_MECHANISM": "PLAIN"},
     "SASL_SSL needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD_FILE"),
    ({"ADSMON_KAFKA_SASL_PASSWORD": "in-the-environment"}, "KAFKA_SASL_PASSWORD is not read"),
    ({"ADSMON_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "ADSMON_KAFKA_SASL_MECHANISM": "PLAIN",
      "ADSMON_KAFKA_SASL_USERNAME": "u", "ADSMON_KAFKA_SASL_PASSWORD_FILE": "/nonexistent/pw"},
     "KAFKA_SASL_PASSWORD_FILE: cannot read the password file"),
    ({"ADSMON_KAFKA_INSTANCE_ID": "a b"}, "ADSMON_KAFKA_INSTANCE_ID='a b' may only contain"),
    ({"ADSMON_KAFKA_SESSION_TIMEOUT_MS": "1000"}, "KAFKA_SESSION_TIMEOUT_MS=1000 is out of range"),
])
def test_a_bad_kafka_security_combination_is_one_config_error_line(env, message):
    with pytest.raises(ConfigError, match=None) as caught:
        load(**env)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert "in-the-environment" not in str(caught.value)
