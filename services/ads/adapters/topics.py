"""The topics ads produces and consumes (names before the configured namespace prefix)."""

from services.kit.kafka import ADS_TOPIC, MARKETPLACE_JOBS_TOPIC

__all__ = ["ADS_TOPIC", "CONSUMES", "MARKETPLACE_JOBS_TOPIC", "PRODUCES"]

PRODUCES = (ADS_TOPIC,)
CONSUMES = (MARKETPLACE_JOBS_TOPIC,)
