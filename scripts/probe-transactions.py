#!/usr/bin/env python3
"""What a Kafka broker does with transactions, for choosing the exactly-once tests' brokers.

    pip install confluent-kafka
    python3 scripts/probe-transactions.py 127.0.0.1:9092 [--timeout-wait 30]

Prints four answers (docs/features.md, "What the test brokers can show" has them for
the brokers this project's tests use):

1. isolates read_committed: a reader stops before a transaction left open;
2. aborts a fenced producer's transaction: after a new producer with the same
   transactional.id initialises, the open transaction's records never become visible
   and the records after it do;
3. aborts an abandoned transaction on its timeout: with a producer that left its
   transaction open and exited (transaction.timeout.ms = 10 s), the records after it
   become visible within --timeout-wait seconds;
4. hands a dead consumer's partitions over: a group member that exits without leaving
   (cooperative-sticky, session.timeout.ms = 10 s, as the stages run) is removed, and
   a new member is assigned its partitions within --timeout-wait seconds.

Each producer that leaves a transaction open runs in a child process that exits without
committing or aborting, as a SIGKILLed pod would.
"""

import argparse
import os
import subprocess
import sys
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

TXN_TIMEOUT_MS = 10_000


def producer(bootstrap, transactional_id):
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": transactional_id,
                  "transaction.timeout.ms": TXN_TIMEOUT_MS})
    p.init_transactions(30)
    return p


def commit(bootstrap, topic, transactional_id, label):
    p = producer(bootstrap, transactional_id)
    p.begin_transaction()
    p.produce(topic, key=b"k", value=label.encode())
    p.commit_transaction(30)


def read(bootstrap, topic, seconds):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex}",
                  "isolation.level": "read_committed", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    seen, deadline = [], time.time() + seconds
    while time.time() < deadline:
        m = c.poll(0.2)
        if m is not None and not m.error():
            seen.append(m.value().decode())
    c.close()
    return seen


def group_consumer(bootstrap, group):
    return Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                     "partition.assignment.strategy": "cooperative-sticky", "session.timeout.ms": 10_000})


def assigned_within(consumer, topic, seconds):
    """Subscribes and polls until partitions are assigned; seconds taken, or None."""
    started, assigned = time.time(), []
    consumer.subscribe([topic], on_assign=lambda _c, parts: assigned.extend(parts))
    while time.time() - started < seconds:
        consumer.poll(0.2)
        if assigned:
            return time.time() - started
    return None


def fresh_topic(bootstrap):
    topic = f"probe-{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the futures resolve
    for f in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        f.result()
    return topic


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bootstrap")
    ap.add_argument("--timeout-wait", type=float, default=30.0,
                    help="seconds to wait for the broker to abort an abandoned transaction, and to hand a "
                         "dead group member's partitions to a new one")
    ap.add_argument("--abandon", nargs=3, metavar=("TOPIC", "TXN_ID", "LABEL"), help=argparse.SUPPRESS)
    ap.add_argument("--die-in-group", nargs=2, metavar=("TOPIC", "GROUP"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.die_in_group:
        topic, group = args.die_in_group
        if assigned_within(group_consumer(args.bootstrap, group), topic, 30) is None:
            sys.exit("the first member was never assigned")
        os._exit(0)  # no LeaveGroup: as a killed process
    if args.abandon:
        topic, txn, label = args.abandon
        p = producer(args.bootstrap, txn)
        p.begin_transaction()
        p.produce(topic, key=b"k", value=label.encode())
        p.flush(30)
        os._exit(0)  # no commit, no abort, no close: as a killed process

    # 1 and 3: committed, abandoned (own id), committed by another producer.
    topic = fresh_topic(args.bootstrap)
    run = uuid.uuid4().hex[:8]
    commit(args.bootstrap, topic, f"probe-{run}-a", "before")
    subprocess.run([sys.executable, __file__, args.bootstrap, "--abandon", topic, f"probe-{run}-dead", "abandoned"],
                   check=True)
    commit(args.bootstrap, topic, f"probe-{run}-b", "after")
    first = read(args.bootstrap, topic, 3)
    isolates = first == ["before"]
    print(f"isolates read_committed: {'yes' if isolates else 'no'} (read {first})")
    later = read(args.bootstrap, topic, args.timeout_wait)
    timed_out = "after" in later and "abandoned" not in later
    print(f"aborts an abandoned transaction within {args.timeout_wait:.0f} s "
          f"(transaction.timeout.ms = {TXN_TIMEOUT_MS}): {'yes' if timed_out else 'no'} (read {later})")

    # 2: abandoned, then a new producer with the same transactional.id commits.
    topic = fresh_topic(args.bootstrap)
    subprocess.run([sys.executable, __file__, args.bootstrap, "--abandon", topic, f"probe-{run}-fenced", "abandoned"],
                   check=True)
    commit(args.bootstrap, topic, f"probe-{run}-fenced", "after")
    fenced = read(args.bootstrap, topic, 3)
    print(f"aborts a fenced producer's transaction: {'yes' if fenced == ['after'] else 'no'} (read {fenced})")

    # 4: a member dies in its group; a new one joins.
    topic, group = fresh_topic(args.bootstrap), f"probe-{run}-group"
    subprocess.run([sys.executable, __file__, args.bootstrap, "--die-in-group", topic, group], check=True)
    consumer = group_consumer(args.bootstrap, group)
    took = assigned_within(consumer, topic, args.timeout_wait)
    consumer.close()
    print("hands a dead member's partitions over: "
          + (f"yes, after {took:.1f} s" if took is not None else f"no, not within {args.timeout_wait:.0f} s"))


if __name__ == "__main__":
    main()
