"""Start-up failures that must end the process with one clear line, not a traceback."""

from __future__ import annotations


class StartupError(Exception):
    """Configuration or dependency problem found while starting; the message is the whole story."""
