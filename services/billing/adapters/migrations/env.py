"""Alembic runs this for every migration command (through services.kit.migrations.upgrade)."""

from services.kit.migrations import run_env

run_env()
