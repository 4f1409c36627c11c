#!/usr/bin/env python3
"""Fills a compacted topic for perf/compaction.sh: N records of 1 KiB values over a key
space of K random keys (so a share of the log is superseded), with librdkafka."""
import argparse
import random
import sys

from confluent_kafka import Producer

parser = argparse.ArgumentParser()
parser.add_argument("--brokers", required=True)
parser.add_argument("--topic", required=True)
parser.add_argument("--records", type=int, default=1_000_000)
parser.add_argument("--keys", type=int, default=200_000)
parser.add_argument("--value-bytes", type=int, default=1024)
args = parser.parse_args()

rng = random.Random(7)
value = bytes(rng.getrandbits(8) for _ in range(args.value_bytes))
producer = Producer({"bootstrap.servers": args.brokers, "linger.ms": 5, "batch.size": 1 << 20,
                     "queue.buffering.max.kbytes": 1 << 20, "acks": "all", "enable.idempotence": False})
errors = []
for n in range(args.records):
    key = b"key-%08d" % rng.randrange(args.keys)
    while True:
        try:
            producer.produce(args.topic, key=key, value=value,
                             on_delivery=lambda e, m: errors.append(e) if e else None)
            break
        except BufferError:
            producer.poll(0.05)
    if n % 10_000 == 0:
        producer.poll(0)
producer.flush(60)
if errors:
    sys.exit(f"{len(errors)} delivery errors, first: {errors[0]}")
print(f"filled {args.topic}: {args.records} records, {args.keys} keys, {args.value_bytes}-byte values")
