"""`python -m services.ads`: run the ads service until SIGTERM."""

from services.ads.bootstrap import build_app
from services.ads.config import AdsConfig
from services.kit.server import run_main

raise SystemExit(run_main("ads", build_app, AdsConfig.from_env))
