"""End-to-end check of the local broker: create a topic, produce with an
idempotent acks=all producer, consume it back. Optional --keep/--verify to
check that data survives a broker restart. Used by `kafka.sh smoke`."""
import argparse
import contextlib
import sys
import time
import uuid

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError


def consume_all(bootstrap, topic, expect, timeout_s=20.0):
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                      auto_offset_reset="earliest", consumer_timeout_ms=1000)
    parts = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or [])]
    c.assign(parts)
    c.seek_to_beginning(*parts)
    got, deadline = [], time.monotonic() + timeout_s
    while len(got) < expect and time.monotonic() < deadline:
        for recs in c.poll(timeout_ms=500).values():
            got.extend(r.value.decode() for r in recs)
    c.close()
    return got


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--topic", default=None)
    ap.add_argument("--messages", type=int, default=100)
    ap.add_argument("--produce", action="store_true", help="create + produce (default: both)")
    ap.add_argument("--verify", action="store_true", help="consume and compare (default: both)")
    a = ap.parse_args()
    both = not (a.produce or a.verify)
    topic = a.topic or f"adsmon.smoke.{uuid.uuid4().hex[:8]}"
    expected = [f"m-{i}" for i in range(a.messages)]

    if a.produce or both:
        adm = KafkaAdminClient(bootstrap_servers=a.bootstrap, client_id="adsmon-smoke")
        with contextlib.suppress(TopicAlreadyExistsError):
            adm.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
        adm.close()
        p = KafkaProducer(bootstrap_servers=a.bootstrap, enable_idempotence=True, acks="all")
        futures = [p.send(topic, key=str(i % 7).encode(), value=v.encode())
                   for i, v in enumerate(expected)]
        p.flush(timeout=30)
        for f in futures:
            f.get(timeout=10)  # raises if any send failed
        p.close()
        print(f"produced {len(expected)} to {topic}")

    if a.verify or both:
        got = consume_all(a.bootstrap, topic, len(expected))
        if sorted(got) != sorted(expected):
            print(f"FAIL: {topic}: consumed {len(got)} of {len(expected)}", file=sys.stderr)
            return 1
        print(f"consumed {len(got)} back from {topic}: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
