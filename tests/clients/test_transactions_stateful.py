"""Kafka transactions under a STATEFUL exactly-once Quix Streams app: a running count and
sum per key, kept in a RocksDB state store backed by a compacted changelog topic that the
app writes in the same transactions as its output and its consumer offsets.

The app is SIGKILLed len(KILL_MODES) times while the input still arrives (at random
moments, or deliberately inside a checkpoint commit, after its output, changelog updates
and offsets were sent and before EndTxn) and restarted each time with the same
transactional.id, so each restart fences the killed incarnation and aborts its open
transaction. Before some restarts the local state directory is deleted, so the state must
be rebuilt from the changelog alone (read_committed, skipping the aborted updates). The
changelog has 4 KiB segments and the broker's cleaner runs every 200 ms, so it is
compacted while all this happens (the cleaner must drop aborted batches and never clean
past the last stable offset). After the last incarnation drained the input and was
stopped, the state dir is deleted once more and one extra record per key is processed by
a fresh incarnation, whose counts can only come from the compacted changelog.

The read_committed output must then show, for every key, the running counts 1, 2, ..., N
exactly once each, in input order, with the matching running sums: a lost changelog
update, an aborted one applied, or an input record processed twice all break it.
"""

import json
import os
import random
import shutil
import textwrap
import time

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from helpers import create_topic, metric, producer, scrape, serve_until_test_ends
from txn_helpers import (PARTITIONS, PacedFeeder, QuixApp, read_partitions, stop_feeder_and_apps,
                         wait_committed_output, watermarks)

KEYS = [f"key-{i}" for i in range(11)]
RECORDS = 3000
PRODUCE_S = 30               # the input arrives over this long, so the kills are mid-stream
# How each killed incarnation dies: "random" at a random moment; "in-commit" inside a
# checkpoint's commit, after its output, changelog updates and offsets were sent in the
# transaction and before EndTxn (the app pauses COMMIT_PAUSE_S there), so the restart's
# fencing aborts a transaction that holds changelog records.
KILL_MODES = ["random", "in-commit", "random", "in-commit"]
KILLS = len(KILL_MODES)
COMMIT_PAUSE_S = 0.25
DELETE_STATE_BEFORE = {2, 4}  # incarnations started on an empty state dir (restore from the changelog)
PROGRESS_TIMEOUT_S = 20
FINISH_TIMEOUT_S = 30
CLEANER_WAIT_S = 15
CHANGELOG_CONFIGS = {"cleanup.policy": "compact", "segment.bytes": "4096", "min.cleanable.dirty.ratio": "0.01"}

APP = textwrap.dedent('''
    """Stateful exactly-once pipeline: {k, n} -> {k, n, count, sum} (running, per key)."""
    import sys
    from quixstreams import Application

    import time
    from quixstreams.kafka import producer as quix_producer

    bootstrap, source, sink, group, state_dir, transactional_id, commit_pause_s = sys.argv[1:8]

    # Each checkpoint's EndTxn waits commit_pause_s first (its output, changelog updates
    # and offsets are already sent in the transaction), so the test can kill it there.
    original_commit = quix_producer.Producer.commit_transaction
    commits = 0
    committed_upto = 0   # records processed when the last commit began (and then completed)

    def paused_commit(self, *args, **kwargs):
        global commits, committed_upto
        commits += 1
        upto = processed
        print(f"txn-commit {commits} begin records={upto - committed_upto}", flush=True)
        time.sleep(float(commit_pause_s))
        original_commit(self, *args, **kwargs)
        committed_upto = upto
        print(f"txn-commit {commits} done", flush=True)

    quix_producer.Producer.commit_transaction = paused_commit
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once",
        commit_interval=0.25,
        state_dir=state_dir,
        consumer_extra_config={"session.timeout.ms": 1500, "heartbeat.interval.ms": 200,
                               "fetch.wait.max.ms": 100},
        # 60 s: longer than the test, so only the restart's fencing can abort a killed
        # incarnation's transaction.
        producer_extra_config={"transactional.id": transactional_id, "transaction.timeout.ms": 60000},
        request_timeout=15,
        broker_availability_timeout=30,
        loglevel="INFO",
    )
    out = app.topic(sink, value_serializer="json")
    sdf = app.dataframe(app.topic(source, value_deserializer="json"))
    processed = 0

    def count(v, state):
        global processed
        processed += 1
        c = state.get("count", 0) + 1
        s = state.get("sum", 0) + v["n"]
        state.set("count", c)
        state.set("sum", s)
        if processed == 1 or processed % 100 == 0:
            # The test waits for this line to know the incarnation is processing.
            print(f"processed {processed} n={v['n']} {v['k']} count={c}", flush=True)
        return {"k": v["k"], "n": v["n"], "count": c, "sum": s}

    sdf = sdf.apply(count, stateful=True)
    sdf.to_topic(out)
    print("quix app running", flush=True)
    app.run()
    print("quix app stopped", flush=True)
''')


@pytest.fixture
def stateful_broker(broker_factory):
    """Short group sessions (a killed app's member must expire quickly) and a log cleaner
    that runs every 200 ms (default: 15 s)."""
    yield from serve_until_test_ends(broker_factory, "--group-min-session-timeout-ms", "1000",
                                     "--log-cleaner-backoff-ms", "200")


class StatefulQuixApp(QuixApp):
    """The stateful APP, which logs "txn-commit N begin records=R" before each checkpoint's
    EndTxn (then pauses) and "txn-commit N done" after it."""

    def wait_commit_begin(self, round_, broker, timeout_s=10):
        """Waits until a new checkpoint commit with processed records in its transaction
        is paused before its EndTxn; returns (its number, its record count)."""
        def begun(text):
            return [(int(line.split()[1]), int(line.split("records=")[1])) for line in text.splitlines()
                    if line.startswith("txn-commit ") and " begin records=" in line]
        before = max((c for c, _ in begun(self.output(tail=None))), default=0)
        deadline = time.time() + timeout_s
        while True:
            text = self.output(tail=None)
            new = [(c, n) for c, n in begun(text) if c > before and n > 0 and f"txn-commit {c} done" not in text]
            if new:
                return new[-1]
            assert self.alive(), f"Quix app (round {round_}) exited:\n{self.output()}"
            assert time.time() < deadline, (
                f"Quix app (round {round_}) began no checkpoint commit in {timeout_s}s:\n{self.output()}\n"
                f"--- broker log:\n{broker.log_text()}")
            time.sleep(0.01)


def cleaner_removed(broker, topic):
    text = scrape(broker)
    per_partition = [metric(text, "tern_partition_cleaner_records_removed_total", topic=topic, partition=p)
                     for p in range(PARTITIONS)]
    if all(v is not None for v in per_partition):
        return sum(per_partition)
    return metric(text, "tern_cleaner_records_removed_total") or 0


def test_quix_stateful_exactly_once_survives_sigkill_and_state_loss(stateful_broker, tmp_path):
    broker = stateful_broker
    source, sink, group, txn_id = "quix-st-in", "quix-st-out", "quix-st", "quix-st-txn"
    # Quix's name for the app's changelog (changelog__{group}--{topic}--{store}); created
    # here first so it has small segments from the start (Quix only checks the partition count).
    changelog = f"changelog__{group}--{source}--default"
    create_topic(broker.bootstrap, source, PARTITIONS)
    create_topic(broker.bootstrap, sink, PARTITIONS)
    create_topic(broker.bootstrap, changelog, PARTITIONS, config=CHANGELOG_CONFIGS)
    script = tmp_path / "quix_stateful_app.py"
    script.write_text(APP)
    state_dir = tmp_path / "state"
    args = [broker.bootstrap, source, sink, group, str(state_dir), txn_id, str(COMMIT_PAUSE_S)]

    seed = int(os.environ.get("TERN_TEST_SEED", "20240612"))
    rng = random.Random(seed)
    records = [(n, rng.choice(KEYS)) for n in range(RECORDS)]
    tail = [(RECORDS + i, key) for i, key in enumerate(KEYS)]   # one more per key, for the last check

    # Idempotent, so a retry cannot duplicate an input record.
    feeder = PacedFeeder(broker.bootstrap, source,
                         [(key.encode(), json.dumps({"k": key, "n": n}).encode()) for n, key in records],
                         batch=20, duration_s=PRODUCE_S, **{"enable.idempotence": True})
    apps = []
    rounds = []
    started = time.time()
    feeder.start()
    try:
        for round_ in range(KILLS + 1):
            fresh = round_ in DELETE_STATE_BEFORE
            if fresh:
                assert state_dir.exists(), f"round {round_}: the previous incarnations' state dir {state_dir} is missing"
                shutil.rmtree(state_dir)
            app = StatefulQuixApp(script, args, tmp_path / f"quix-{round_}.log")
            apps.append(app)
            rounds.append({"round": round_, "fresh_state": fresh, "started_at_s": round(time.time() - started, 2)})
            if fresh:
                rounds[-1]["changelog_records_compacted_away"] = cleaner_removed(broker, changelog)
            if round_ == KILLS:
                # The last incarnation may find the input already done (nothing to process).
                break
            app.wait_processing(f"round {round_}", broker, PROGRESS_TIMEOUT_S)
            rounds[-1]["processing_at_s"] = round(time.time() - started, 2)
            time.sleep(rng.uniform(0.3, 2.0))
            assert app.alive(), f"Quix app (round {round_}) exited:\n{app.output()}"
            mode = KILL_MODES[round_]
            if mode == "in-commit":
                commit, in_txn = app.wait_commit_begin(round_, broker)
                app.sigkill()
                text = app.output(tail=None)
                assert f"txn-commit {commit} done" not in text, (
                    f"round {round_}: the kill was meant to land inside commit {commit} but it completed "
                    f"(seed {seed}):\n{app.output()}")
                rounds[-1]["killed_in_commit"] = f"#{commit} with {in_txn} records"
            else:
                app.sigkill()
            rounds[-1]["killed_at_s"] = round(time.time() - started, 2)
            rounds[-1]["last_progress"] = app.last_progress()

        feeder.finish(timeout=PRODUCE_S + 30)
        print(f"quix stateful: seed {seed}, rounds {rounds}, input done after {time.time() - started:.1f}s")
        killed_while_producing = [r for r in rounds if r.get("killed_at_s", PRODUCE_S) < PRODUCE_S]
        assert len(killed_while_producing) >= 2, (
            f"the kills should land while input still arrives (seed {seed}, rounds {rounds}; input over {PRODUCE_S}s)")

        # The last incarnation drains the input.
        final = apps[-1]
        wait_committed_output(broker, sink, set(range(RECORDS)), final, "final round", FINISH_TIMEOUT_S)
        code = final.sigterm()
        assert code == 0, f"Quix app exit code {code} on SIGTERM:\n{final.output()}"
        drained_at = round(time.time() - started, 1)

        # Everything is committed now: the cleaner compacts the changelog up to its end
        # (all but the active segments).
        deadline = time.time() + CLEANER_WAIT_S
        removed = cleaner_removed(broker, changelog)
        while removed <= 0:
            assert time.time() < deadline, (
                f"the changelog was not compacted in {CLEANER_WAIT_S}s (ends "
                f"{watermarks(broker.bootstrap, changelog, 'read_uncommitted')}):\n{broker.log_text()}")
            time.sleep(0.2)
            removed = cleaner_removed(broker, changelog)
        changelog_ends = watermarks(broker.bootstrap, changelog, "read_uncommitted")

        # State restored from the compacted changelog alone: one more record per key,
        # processed by a new incarnation on an empty state dir.
        shutil.rmtree(state_dir)
        tail_producer = producer(broker.bootstrap, **{"enable.idempotence": True})
        for n, key in tail:
            tail_producer.produce(source, key=key.encode(), value=json.dumps({"k": key, "n": n}).encode())
        assert tail_producer.flush(30) == 0
        verify = StatefulQuixApp(script, args, tmp_path / "quix-verify.log")
        apps.append(verify)
        verify.wait_processing("verification round", broker, PROGRESS_TIMEOUT_S)
        wait_committed_output(broker, sink, set(range(RECORDS + len(tail))), verify, "verification round",
                              FINISH_TIMEOUT_S)
        code = verify.sigterm()
        assert code == 0, f"Quix app exit code {code} on SIGTERM:\n{verify.output()}"
    finally:
        stop_feeder_and_apps(feeder, apps)
    print(f"quix stateful: drained at {drained_at}s, changelog ends {changelog_ends}, cleaner removed {removed} "
          f"records, verified after {time.time() - started:.1f}s")

    # Quix used the pre-created changelog (and no other one).
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    changelogs = [t for t in admin.list_topics(timeout=10).topics if t.startswith("changelog__")]
    assert changelogs == [changelog], f"the app's changelog topics: {changelogs}"
    resource = ConfigResource(ConfigResource.Type.TOPIC, changelog)
    configs = admin.describe_configs([resource])[resource].result(timeout=15)
    assert {k: configs[k].value for k in CHANGELOG_CONFIGS} == CHANGELOG_CONFIGS

    # The incarnations started on an empty state dir restored it from the changelog.
    for round_, app in enumerate(apps):
        if round_ in DELETE_STATE_BEFORE or app is verify:
            assert "Recovery successful" in app.output(tail=None), (
                f"incarnation {round_} started without local state but logged no changelog recovery:\n{app.output()}")

    # The input, read back: the truth for each key's order.
    inputs = [json.loads(m.value()) for msgs in read_partitions(broker.bootstrap, source, "read_uncommitted").values()
              for m in msgs]
    assert sorted(i["n"] for i in inputs) == list(range(RECORDS + len(tail))), "the input holds every number once"
    input_by_key = {}
    for v in inputs:
        input_by_key.setdefault(v["k"], []).append(v["n"])

    committed = read_partitions(broker.bootstrap, sink, "read_committed")
    output_by_key = {}
    for p, msgs in committed.items():
        for m in msgs:
            o = json.loads(m.value())
            output_by_key.setdefault(o["k"], []).append((p, o["n"], o["count"], o["sum"]))
    total_out = sum(len(v) for v in output_by_key.values())
    context = f"seed {seed}, rounds {rounds}"
    assert set(output_by_key) == set(input_by_key), f"keys in the output vs the input ({context})"
    problems = []
    for key in sorted(input_by_key):
        ns = input_by_key[key]
        out = output_by_key[key]
        partitions = {p for p, *_ in out}
        assert len(partitions) == 1, f"{key} spread over output partitions {sorted(partitions)} ({context})"
        counts = [c for _, _, c, _ in out]
        expected = []
        running = 0
        for i, n in enumerate(ns):
            running += n
            expected.append((n, i + 1, running))
        got = [(n, c, s) for _, n, c, s in out]
        if got != expected:
            first_bad = next((i for i, (g, e) in enumerate(zip(got, expected)) if g != e), min(len(got), len(expected)))
            repeats = sorted({c for c in counts if counts.count(c) > 1})
            gaps = sorted(set(range(1, len(ns) + 1)) - set(counts))
            problems.append(
                f"{key}: N={len(ns)}, {len(got)} outputs, first difference at #{first_bad}: "
                f"got {got[max(0, first_bad - 2):first_bad + 3]}, expected {expected[max(0, first_bad - 2):first_bad + 3]}; "
                f"repeated counts {repeats[:10]}, missing counts {gaps[:10]}")
    assert not problems, (
        f"read_committed output must hold, per key, the running counts 1..N once each, in input order, with "
        f"the running sums ({context}; {total_out} outputs for {RECORDS + len(tail)} inputs):\n" + "\n".join(problems))
    assert total_out == RECORDS + len(tail)
    assert sum(c for out in output_by_key.values() for _, _, c, _ in out[-1:]) == RECORDS + len(tail), (
        "the final counts add up to the number of inputs")

    uncommitted = sum(map(len, read_partitions(broker.bootstrap, sink, "read_uncommitted").values()))
    # The kills land mid-transaction with input arriving, so the killed incarnations
    # leave aborted output behind; read_committed must have hidden it.
    assert uncommitted > total_out, (
        f"expected aborted output from the killed incarnations in the log (read_uncommitted {uncommitted} "
        f"records, read_committed {total_out}; {context})")
