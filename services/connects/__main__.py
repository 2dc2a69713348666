"""`python -m services.connects`: serve the Connects ledger until SIGTERM/SIGINT."""

from services.connects.bootstrap import bootstrap
from services.connects.config import SERVICE
from services.kit.server import run_main

if __name__ == "__main__":
    raise SystemExit(run_main(SERVICE, bootstrap))
