"""A bare kit consumer in its own process, for the recovery tests: prints each record value, flushed.

usage: python -m tests.integration.kit.consumer_process BOOTSTRAP TOPIC GROUP [INSTANCE_ID]
On SIGTERM it closes the consumer (leaving the group) and prints `closed <seconds>`.
"""

from __future__ import annotations

import signal
import sys
import time
from types import FrameType

from services.kit.kafka import CLOSE_TIMEOUT_MS, make_consumer


def main(argv: list[str]) -> int:
    bootstrap, topic, group, *rest = argv
    consumer = make_consumer(bootstrap, group_id=group, client_id="recovery-test",
                             instance_id=rest[0] if rest else "")
    stopping = False

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    # As IdempotentConsumer does: metadata first, or the group leader may assign no partitions at all.
    while not consumer.partitions_for_topic(topic):
        time.sleep(0.1)
    consumer.subscribe([topic])
    print("started", flush=True)
    while not stopping:
        for records in consumer.poll(timeout_ms=200).values():
            for record in records:
                print(f"record {record.value.decode()}", flush=True)
            consumer.commit()
    began = time.monotonic()
    consumer.close(autocommit=False, timeout_ms=CLOSE_TIMEOUT_MS)
    print(f"closed {time.monotonic() - began:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
