"""The traffic simulator: `python -m deploy.sim` (see __main__.py)."""
