"""`python -m services.connects`: serve the Connects ledger until SIGTERM/SIGINT.

`python -m services.connects relay` runs only the outbox relay, for deployments that
set ADSMON_CONNECTS_RELAY_IN_PROCESS=false to keep Kafka publishing off the servers' GIL.

`python -m services.connects --processes N` (or ADSMON_CONNECTS_PROCESSES=N) starts N serving
processes on the one gRPC port (SO_REUSEPORT), so Python uses N cores; process i serves its
metrics on ADSMON_CONNECTS_METRICS_PORT + i.
"""

import os
import sys

from services.connects.bootstrap import bootstrap, run_relay
from services.connects.config import SERVICE, ConnectsConfig
from services.kit.config import ConfigError
from services.kit.server import run_main, run_processes


def main(argv: list[str]) -> int:
    if argv == ["relay"]:
        return run_relay()
    if argv[:1] == ["--processes"] and len(argv) == 2 and argv[1].isdigit():
        os.environ["ADSMON_CONNECTS_PROCESSES"] = argv[1]
    elif argv:
        print("usage: python -m services.connects [relay | --processes N]", file=sys.stderr)
        return 2
    try:
        config = ConnectsConfig.from_env()
    except ConfigError as exc:
        print(f"{SERVICE}: cannot start: {exc}", file=sys.stderr)
        return 2
    if config.processes > 1:
        return run_processes(SERVICE, "services.connects", config.processes, config.base)
    return run_main(SERVICE, bootstrap, lambda: config)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
