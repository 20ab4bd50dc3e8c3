#!/usr/bin/env python3
"""Reads a pipeline's transactions topic with kafka-python, a Kafka client written
independently of librdkafka, and checks what any consumer would rely on: every record
is a JSON TransactionEvent, valid against the committed JSON Schema, keyed by its
customer_id, and each customer stays on one partition.

usage: read_transactions.py BOOTSTRAP PIPELINE EXPECTED_COUNT
"""
import json
import pathlib
import sys

import jsonschema
from kafka import KafkaConsumer

bootstrap, pipeline, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
topic = f"{pipeline}.transactions"
schema_path = pathlib.Path(__file__).resolve().parent.parent / "services/common/schemas/transaction-event.schema.json"
validator = jsonschema.Draft202012Validator(
    json.loads(schema_path.read_text()), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)

consumer = KafkaConsumer(
    topic,
    bootstrap_servers=bootstrap,
    group_id=f"{pipeline}.ci-python-reader",
    auto_offset_reset="earliest",
    enable_auto_commit=False,
    consumer_timeout_ms=30000,
)
seen = 0
partition_of = {}
kinds = set()
for record in consumer:
    event = json.loads(record.value)
    key = record.key.decode()
    if event["customer_id"] != key:
        sys.exit(f"offset {record.partition}/{record.offset}: key {key!r} != customer_id {event['customer_id']!r}")
    errors = sorted(e.message for e in validator.iter_errors(event))
    if errors:
        sys.exit(f"offset {record.partition}/{record.offset}: schema errors {errors} in {event}")
    if partition_of.setdefault(key, record.partition) != record.partition:
        sys.exit(f"customer {key} on partitions {partition_of[key]} and {record.partition}")
    kinds.add(event["kind"])
    seen += 1
    if seen == expected:
        break
consumer.close()
if seen != expected:
    sys.exit(f"read {seen} records, expected {expected}")
print(f"kafka-python read {seen} valid TransactionEvents from {topic}: {len(partition_of)} customers, kinds {sorted(kinds)}")
