"""`make demo` / `python -m deploy.sim`: marketplace traffic against a running suite (`make run`).

    python -m deploy.sim --rate 30 --duration 120 --seed 7
    python -m deploy.sim --flows credits,proposals=10,jobs_cancelled   # only these (name[=weight])
    python -m deploy.sim --services connects,marketplace               # only the ledger's flows

Targets and Kafka come from the same settings as `make run`: ADSMON_<SVC>_GRPC_PORT (50051-50053),
ADSMON_KAFKA_BOOTSTRAP, ADSMON_KAFKA_TOPIC_PREFIX, and the identities: mutual TLS with the certificates in
ADSMON_TLS_DIR (default .local/secrets/tls, `make secrets`), or with ADSMON_TRANSPORT=plaintext bearer tokens
signed with ADSMON_AUTH_SECRET_FILE. Ctrl-C stops it and prints the totals. Exit status 1 if any call failed
with a server-side error (not for refusals or "not built").
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from google.protobuf import message as pb_message

from deploy.sim.core import ERROR, Flow, Sim, run
from deploy.sim.flows import all_flows
from services.connects.adapters.topics import MARKETPLACE_JOBS
from services.kit.identities import CallerCredentials, ChannelPool
from services.kit.kafka import encode_event, make_event, make_producer
from services.kit.startup import StartupError

PORTS = {"connects": 50051, "ads": 50052, "billing": 50053}


def choose(flows: list[Flow], spec: str) -> list[Flow]:
    if not spec:
        return flows
    by_name = {f.name: f for f in flows}
    chosen = []
    for part in spec.split(","):
        name, _, weight = part.strip().partition("=")
        if name not in by_name:
            raise SystemExit(f"unknown flow {name!r}; flows: {', '.join(by_name)}")
        flow = by_name[name]
        if weight:
            flow.weight = float(weight)
        chosen.append(flow)
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.sim", description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0, help="events per second (default 20)")
    parser.add_argument("--duration", type=float, default=None, help="seconds (default: until Ctrl-C)")
    parser.add_argument("--seed", type=int, default=1, help="the same seed repeats the same actions (default 1)")
    parser.add_argument("--namespace", default="", help="id prefix (default: sim<seed>-<time>); reuse it to replay")
    parser.add_argument("--flows", default="", help="comma-separated flow names, optionally name=weight")
    parser.add_argument("--services", default="connects,marketplace,ads,billing",
                        help="only flows exercising these (connects, marketplace = Kafka events, ads, billing)")
    parser.add_argument("--accounts", type=int, default=200, help="freelancers in the simulated market")
    args = parser.parse_args(argv)
    if args.rate <= 0:
        raise SystemExit("--rate must be positive")

    try:
        credentials = CallerCredentials.from_env()
    except StartupError as exc:
        raise SystemExit(f"sim: {exc}") from None
    channels = ChannelPool(credentials, {svc: f"127.0.0.1:{os.environ.get(f'ADSMON_{svc.upper()}_GRPC_PORT', port)}"
                                         for svc, port in PORTS.items()})
    topic = os.environ.get("ADSMON_KAFKA_TOPIC_PREFIX", "") + MARKETPLACE_JOBS
    producer = make_producer(os.environ.get("ADSMON_KAFKA_BOOTSTRAP", "127.0.0.1:9092"), client_id="adsmon-sim")

    def publish(key: str, payload: pb_message.Message) -> None:
        event = make_event(payload, aggregate_id=key, producer="marketplace")
        producer.send(topic, key=key.encode(), value=encode_event(event)).get(timeout=10)

    stop = False

    def request_stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    namespace = args.namespace or f"sim{args.seed}-{int(time.time())}"
    sim = Sim(seed=args.seed, namespace=namespace, credentials=credentials, channels=channels, publish=publish,
              accounts=args.accounts)
    services = {s.strip() for s in args.services.split(",") if s.strip()}
    flows = choose([f for f in all_flows() if f.service in services], args.flows)
    if not flows:
        raise SystemExit("no flow left to run: check --services and --flows")
    print(f"simulating {', '.join(f.name for f in flows)} at {args.rate:g} events/s, seed {args.seed}, "
          f"namespace {namespace}; Ctrl-C stops", flush=True)
    tty = sys.stdout.isatty()

    def progress(line: str) -> None:
        print(f"\r{line}\033[K" if tty else line, end="" if tty else "\n", flush=True)

    try:
        tally = run(sim, flows, rate=args.rate, duration=args.duration, progress=progress, should_stop=lambda: stop)
    finally:
        producer.close(timeout=5)
        channels.close()
    if tty:
        print()
    for (flow, outcome), n in sorted(tally.outcomes.items()):
        print(f"  {flow:16s} {outcome:10s} {n}")
    for (method, code), n in tally.refusals.most_common():
        print(f"  refused: {method} {code} {n}")
    return 1 if tally.total(ERROR) else 0


if __name__ == "__main__":
    raise SystemExit(main())
