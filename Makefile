# adsmon: one entry point for set-up, running, testing and benchmarking.
# Every target does its own set-up on a fresh machine (venv, stubs, infra).

SHELL := /bin/bash
.DEFAULT_GOAL := help
PY := .venv/bin/python
LOCAL := $(CURDIR)/.local
export ADSMON_LOCAL := $(LOCAL)
export ADSMON_AUTH_SECRET_FILE := $(LOCAL)/secrets/auth_secret
PROTO_FILES := $(shell find protos -name '*.proto' 2>/dev/null)
GRPC_TOOLS_PROTO = $(shell $(PY) -c 'import grpc_tools,os;print(os.path.dirname(grpc_tools.__file__))')/_proto
DB ?= sqlite
PYTEST_ARGS ?=

.PHONY: help venv protos secrets infra infra-stop test test-unit test-integration test-e2e lint run demo snapshot \
        dashboards bench chaos fuzz clean images test-containers

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

.venv/.stamp: pyproject.toml requirements.lock
	@command -v python3.11 >/dev/null || python3 -c 'import sys; assert sys.version_info[:2] == (3, 11), "python 3.11 is required"'
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	@# Make the repo (services.*) and the generated stubs (adsmon.*) importable.
	printf '%s\n%s\n' "$(CURDIR)" "$(CURDIR)/gen" > $$($(PY) -c 'import sysconfig;print(sysconfig.get_paths()["purelib"])')/adsmon.pth
	touch $@

venv: .venv/.stamp ## create the virtualenv from the pinned lock file

gen/.stamp: .venv/.stamp $(PROTO_FILES)
	rm -rf gen && mkdir -p gen
	$(PY) -m grpc_tools.protoc -I protos -I $(GRPC_TOOLS_PROTO) \
	  --python_out=gen --grpc_python_out=gen --pyi_out=gen $(PROTO_FILES)
	find gen -type d -exec touch {}/__init__.py \;
	touch $@

protos: gen/.stamp ## generate Python stubs from protos/ into gen/ (never edited, not committed)

$(LOCAL)/secrets/auth_secret:
	@mkdir -p $(LOCAL)/secrets && chmod 700 $(LOCAL)/secrets
	@umask 077 && $(PY) -c 'import secrets;print(secrets.token_hex(32))' > $@

secrets: .venv/.stamp $(LOCAL)/secrets/auth_secret ## the local auth secret and the development CA + certificates (.local/secrets/tls)
	@deploy/local/dev-ca.sh "$(LOCAL)/secrets/tls"

infra: venv ## start PostgreSQL 15 and Kafka (KRaft) on loopback, installing them if needed
	deploy/local/prometheus.sh install
	deploy/local/postgres.sh start
	deploy/local/kafka.sh start

infra-stop: ## stop the local infrastructure
	-deploy/local/kafka.sh stop
	-deploy/local/postgres.sh stop
	-deploy/local/prometheus.sh stop

test: protos secrets infra ## run every test (unit, integration on real PostgreSQL+Kafka, e2e)
	set -a; source $(LOCAL)/env; set +a; $(PY) -m pytest -q $(PYTEST_ARGS) tests

test-unit: protos secrets ## unit tests only (no PostgreSQL or Kafka; promtool for the alert tests)
	deploy/local/prometheus.sh install
	$(PY) -m pytest -q $(PYTEST_ARGS) tests/unit

images: venv ## container images: debootstrapped base, the suite (non-root), PostgreSQL, Kafka, Prometheus (podman/docker)
	deploy/containers/images.sh all

# The images `make test-containers` runs: `make images`' local builds unless set
# (a team's registry images: README "Integration tests in containers"; SKIP_IMAGES=1 skips the build).
CONTAINER_TESTS ?= tests/containers tests/e2e/test_walking_skeleton.py
test-containers: export ADSMON_IMAGE ?= localhost/adsmon:local
test-containers: export ADSMON_POSTGRES_IMAGE ?= localhost/adsmon-postgres:15
test-containers: export ADSMON_KAFKA_IMAGE ?= localhost/adsmon-kafka:4.1.1
test-containers: protos $(if $(SKIP_IMAGES),,images) ## e2e tests against deploy/compose.test.yaml's containers (torn down also on failure)
	$(PY) deploy/containers/stack.py test -f deploy/compose.test.yaml -- \
	  $(PY) -m pytest -q $(PYTEST_ARGS) $(CONTAINER_TESTS)

lint: protos ## ruff, mypy over services/ (config in pyproject.toml), proto lint (buf)
	.venv/bin/ruff check .
	.venv/bin/mypy
	deploy/local/protolint.sh

run: protos secrets infra ## run the suite (infra, connects, ads, billing, Prometheus), restarting crashed services; Ctrl-C stops it all
	set -a; source $(LOCAL)/env; set +a; DB=$(DB) $(PY) deploy/run_suite.py; \
	  status=$$?; if [ -z "$(KEEP_INFRA)" ]; then $(MAKE) --no-print-directory infra-stop; fi; exit $$status

RATE ?= 20
DURATION ?=
SEED ?= 1
demo: protos secrets ## marketplace traffic against `make run` (RATE=events/s DURATION=s SEED=n; Ctrl-C stops)
	set -a; source $(LOCAL)/env; set +a; $(PY) -m deploy.sim --rate $(RATE) --seed $(SEED) \
	  $(if $(DURATION),--duration $(DURATION)) $(if $(FLOWS),--flows $(FLOWS))

MINUTES ?= 15
snapshot: protos ## draw every dashboard panel from `make run`'s Prometheus into .local/snapshot.png (MINUTES=15)
	$(PY) -m deploy.grafana.snapshot --minutes $(MINUTES)

dashboards: venv ## regenerate deploy/grafana/dashboards/*.json from deploy/grafana/dashboards.py
	$(PY) -m deploy.grafana.generate

FUZZ_EXAMPLES ?= 200
FUZZ_SEED ?= 20261202
fuzz: protos secrets infra ## hostile gRPC requests and Kafka records against all three services (FUZZ_EXAMPLES=n per method, FUZZ_SEED=n)
	set -a; source $(LOCAL)/env; set +a; FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FUZZ_SEED=$(FUZZ_SEED) \
	  $(PY) -m pytest -q $(PYTEST_ARGS) tests/fuzz

bench: protos secrets infra ## benchmarks: throughput and p50/p99 against same-run baselines
	set -a; source $(LOCAL)/env; set +a; deploy/local/tools.sh install ghz; $(PY) tests/load/run_all.py

chaos: protos ## fault tests (SIGKILL, Kafka down 30s, PostgreSQL restart, slow connects) on a private suite, then the checker
	ADSMON_CHAOS=1 $(PY) -m pytest -q -s -p no:cacheprovider $(PYTEST_ARGS) tests/chaos

clean: infra-stop ## stop infra and delete local state (databases, Kafka data, venv, stubs)
	rm -rf .local gen .venv
