"""`python -m services.billing`: run the billing service until SIGTERM."""

from services.billing.bootstrap import build_app
from services.billing.config import BillingConfig
from services.kit.server import run_main

raise SystemExit(run_main("billing", build_app, BillingConfig.from_env))
