"""`python -m services.connects [serve [--processes N] | migrate | relay]` (see services.kit.main)."""

import sys

from services.connects.bootstrap import SPEC
from services.kit.main import main

if __name__ == "__main__":
    raise SystemExit(main(SPEC, sys.argv[1:]))
