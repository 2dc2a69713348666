"""`python -m services.connects`: serve the Connects ledger until SIGTERM/SIGINT.

`python -m services.connects relay` runs only the outbox relay, for deployments that
set ADSMON_CONNECTS_RELAY_IN_PROCESS=false to keep Kafka publishing off the servers' GIL.
"""

import sys

from services.connects.bootstrap import bootstrap, run_relay
from services.connects.config import SERVICE
from services.kit.server import run_main

if __name__ == "__main__":
    if sys.argv[1:] == ["relay"]:
        raise SystemExit(run_relay())
    raise SystemExit(run_main(SERVICE, bootstrap))
