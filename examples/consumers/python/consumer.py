#!/usr/bin/env python3
"""Consume runwatch triggers exactly once: a durable JetStream pull consumer with explicit
acks, and a SQLite file that remembers which trigger ids were handled.

JetStream delivers at least once (a message whose ack is lost, or whose consumer crashed
before acking, is delivered again), and its Nats-Msg-Id deduplication only covers
`streams.duplicate_window`; a trigger republished later (a replay into an empty database,
a relay after a long outage) arrives as a new message with the same `trigger_id`. So the
consumer dedupes on `trigger_id` itself:

    for each message:
        BEGIN
          INSERT INTO handled(trigger_id, ...)      -- ignored when already there
          if it was new: do the work (here: INSERT INTO tasks), in the same transaction
        COMMIT
        ack

A crash before COMMIT undoes both and the message is redelivered; a crash after COMMIT and
before the ack redelivers a message whose id is already in `handled`, which is skipped and
acked. Replace `handle()` with your own work; if that work leaves the database (an HTTP
call to an agent), pass `trigger_id` along as an idempotency key.

Usage:
    PYTHONPATH=.local/pip-consumer python3 examples/consumers/python/consumer.py \
        --stream RUNWATCH_TRIGGERS --durable my-agent --db my-agent.sqlite

Prints `handled <trigger_id> <rule> <owner>/<name> pr=<n> failed=<workflows>` for each
trigger handled and `skipped <trigger_id>` for one seen before.
"""

import argparse
import asyncio
import json
import os
import sqlite3
import sys

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

SCHEMA = """
CREATE TABLE IF NOT EXISTS handled (
    trigger_id TEXT PRIMARY KEY,
    stream_seq INTEGER NOT NULL,
    handled_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE TABLE IF NOT EXISTS tasks (
    trigger_id TEXT PRIMARY KEY REFERENCES handled (trigger_id),
    repository TEXT NOT NULL,
    pr_number INTEGER,
    failed_workflows TEXT NOT NULL,
    body TEXT NOT NULL
);
"""


def parse_args(argv):
    p = argparse.ArgumentParser(description="Consume runwatch triggers exactly once.")
    p.add_argument("--url", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"),
                   help="NATS server (default: $NATS_URL or nats://127.0.0.1:4222)")
    p.add_argument("--stream", default=os.environ.get("TRIGGERS_STREAM", "RUNWATCH_TRIGGERS"),
                   help="the triggers stream (default: $TRIGGERS_STREAM or RUNWATCH_TRIGGERS)")
    p.add_argument("--durable", default=os.environ.get("CONSUMER_DURABLE", "trigger-consumer"),
                   help="durable consumer name, one per application (default: $CONSUMER_DURABLE "
                        "or trigger-consumer)")
    p.add_argument("--db", default=os.environ.get("CONSUMER_DB", "trigger-consumer.sqlite"),
                   help="SQLite file of handled trigger ids (default: $CONSUMER_DB or "
                        "trigger-consumer.sqlite)")
    p.add_argument("--ack-wait", type=float, default=30.0,
                   help="seconds before JetStream redelivers an unacked message, when this "
                        "creates the consumer (default 30)")
    p.add_argument("--batch", type=int, default=16, help="messages per fetch (default 16)")
    p.add_argument("--exit-when-idle", type=float, default=None, metavar="SECONDS",
                   help="exit 0 once no message arrived for this long (default: run forever)")
    p.add_argument("--crash-after", type=int, default=None, metavar="N",
                   help="for tests: exit with status 3 right after handling the N-th message, "
                        "before acking it")
    return p.parse_args(argv)


def open_store(path):
    db = sqlite3.connect(path, isolation_level=None)  # explicit BEGIN / COMMIT below
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.executescript(SCHEMA)
    return db


def failed_jobs(trigger):
    """`job[: step; step]` for each failed job of the failed runs (runs.*.jobs), comma-separated."""
    out = []
    for run in trigger.get("runs", {}).values():
        for job in run.get("jobs", []):
            steps = "; ".join(s["name"] for s in job.get("failed_steps", []))
            out.append(f"{job['name']}: {steps}" if steps else job["name"])
    return ",".join(out)


def handle(db, trigger):
    """The work a trigger causes, inside the dedupe transaction: here, queue a task."""
    repo = trigger["repository"]
    db.execute(
        "INSERT INTO tasks (trigger_id, repository, pr_number, failed_workflows, body) "
        "VALUES (?, ?, ?, ?, ?)",
        (trigger["trigger_id"], f"{repo['owner']}/{repo['name']}", trigger.get("pr_number"),
         json.dumps(trigger.get("failed_workflows", [])), json.dumps(trigger)),
    )


def flaky_words(known):
    """` flaky=ci:3,lint:2` (workflow:flips), or nothing when no failure is known flaky."""
    if not known:
        return ""
    return " flaky=" + ",".join(f"{k['workflow']}:{k['flips']}" for k in known)


def record(db, trigger, stream_seq):
    """Handles `trigger` unless its id was handled before; True when it was new."""
    db.execute("BEGIN IMMEDIATE")
    try:
        cur = db.execute(
            "INSERT INTO handled (trigger_id, stream_seq) VALUES (?, ?) "
            "ON CONFLICT (trigger_id) DO NOTHING",
            (trigger["trigger_id"], stream_seq),
        )
        new = cur.rowcount == 1
        if new:
            handle(db, trigger)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return new


async def ensure_consumer(js, stream, durable, ack_wait):
    try:
        await js.consumer_info(stream, durable)
    except NotFoundError:
        await js.add_consumer(stream, ConsumerConfig(
            durable_name=durable,
            name=durable,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            max_deliver=-1,  # never give up on a trigger
        ))


async def run(args):
    db = open_store(args.db)
    nc = await nats.connect(args.url)
    js = nc.jetstream()
    await ensure_consumer(js, args.stream, args.durable, args.ack_wait)
    sub = await js.pull_subscribe_bind(durable=args.durable, stream=args.stream)

    handled = 0
    idle = 0.0
    fetch_timeout = 1.0
    try:
        while args.exit_when_idle is None or idle < args.exit_when_idle:
            try:
                msgs = await sub.fetch(args.batch, timeout=fetch_timeout)
            except (nats.errors.TimeoutError, asyncio.TimeoutError):
                msgs = []
            if not msgs:
                idle += fetch_timeout
                continue
            idle = 0.0
            for msg in msgs:
                try:
                    trigger = json.loads(msg.data)
                    trigger_id = trigger["trigger_id"]
                except (ValueError, KeyError, TypeError):
                    # Not a trigger: nothing will ever handle it; say so and stop redelivery.
                    print(f"not a trigger at stream sequence {msg.metadata.sequence.stream}",
                          file=sys.stderr, flush=True)
                    await msg.term()
                    continue
                if record(db, trigger, msg.metadata.sequence.stream):
                    repo = trigger["repository"]
                    print(f"handled {trigger_id} {trigger.get('rule')} "
                          f"{repo['owner']}/{repo['name']} pr={trigger.get('pr_number')} "
                          f"failed={','.join(trigger.get('failed_workflows', []))} "
                          f"author={(trigger.get('pull_request') or {}).get('author', '-')} "
                          f"jobs={failed_jobs(trigger)}"
                          f"{flaky_words(trigger.get('known_flaky', []))}", flush=True)
                    handled += 1
                    if args.crash_after is not None and handled >= args.crash_after:
                        os._exit(3)  # committed, not acked: JetStream will redeliver it
                else:
                    print(f"skipped {trigger_id}", flush=True)
                await msg.ack()
    finally:
        await nc.flush()  # the last acks reach the server before the connection closes
        await nc.close()
        db.close()


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        asyncio.run(run(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
