"""Coalescing across host flushes, and commits at the low watermark."""

import re
import time

from monasca_persister_dbpt.repositories.metrics import MetricsRepository
from tests import records
from tests.functional.test_persister_end_to_end import counts, produce
from tests.functional.test_persister_end_to_end import persister  # noqa: F401
from tests.functional.test_persister_end_to_end import topics  # noqa: F401
from tests.functional.test_persister_end_to_end import wait_until

NOW = int(time.time() * 1000)


def _count(influx, db):
    rows = influx.rows('SELECT count(value) FROM "cpu.idle_perc"', db) \
        if db in influx.databases() else []
    return rows[0]['count'] if rows else 0


def _feed(repo, recs, start=0):
    batch = repo.data_points_class()
    for offset, rec in enumerate(recs, start):
        line, tenant = repo.process_message(
            records.Message(records.encode(rec), offset))
        batch.append(tenant, line)
    repo.write_batch(batch)


def _processed(proc):
    """Records the host says it flushed."""
    return sum(int(n) for n in re.findall(r'Processed (\d+) messages',
                                          proc.logtext()))


def test_busy_tenants_are_written_by_size_and_quiet_ones_by_age(
        influx_conf, influx):
    influx_conf.set_override('max_delay', 3.0, 'dbpt')
    influx_conf.set_override('coalesce_points', 100, 'dbpt')
    repo = MetricsRepository(influx_conf)
    _feed(repo, [records.metric('quiet', timestamp=NOW)])
    # Five host flushes of 50 points of "busy".
    for flush in range(5):
        _feed(repo, [records.metric('busy', timestamp=NOW + flush * 100 + i)
                     for i in range(50)], start=1 + flush * 50)
    # Written by size, in requests of at least 100 points (more when
    # points came in while a write was under way); the quiet point waits.
    assert wait_until(lambda: _count(influx, 'mon_busy') >= 200, 2.5,
                      interval=0.05)
    assert _count(influx, 'mon_quiet') == 0
    assert repo.watermark.offsets() == {('metrics', 0): 0}  # quiet waits
    # The quiet point (and busy's rest, if any) by age: within max_delay
    # plus one write, with no flush of the host.
    assert wait_until(lambda: _count(influx, 'mon_quiet') == 1 and
                      _count(influx, 'mon_busy') == 250, 3.0 + 5,
                      interval=0.05)
    assert 2 <= repo.stats.tenant('busy')['write_requests'] <= 3
    assert repo.watermark.offsets() == {('metrics', 0): 251}


def test_a_commit_never_passes_a_buffered_record_across_a_kill(
        influx, broker, topics, persister):  # noqa: F811
    """Points stay buffered (no size or age reached) while the host flushes
    and commits; a SIGKILL then must lose none of them."""
    sent = [records.encode(records.metric('held-back', timestamp=NOW - i,
                                          value=i)) for i in range(900)]
    produce(broker, topics['metrics_topic'], sent)
    proc = persister(batch_size=100, max_wait=1,
                     extra='max_delay = 3600\ncoalesce_points = 100000')
    # The host flushed (and committed) all 900 records...
    assert wait_until(lambda: _processed(proc) == 900, 60), \
        proc.logtext()[-2000:]
    time.sleep(2)  # and its timed flushes commit what they may
    assert _count(influx, 'mon_held-back') == 0  # ...but wrote nothing
    proc.kill()
    proc = persister(batch_size=100, max_wait=1, extra='max_delay = 0.5')
    assert wait_until(lambda: counts(influx, '"cpu.idle_perc"', 'value') ==
                      {'mon_held-back': 900}, 60), proc.logtext()[-2000:]


def test_sigterm_writes_what_is_coalesced_and_commits_nothing_read_again(
        influx, broker, topics, persister, tmp_path):  # noqa: F811
    """A graceful stop (systemd stop, an upgrade): the points kept for
    coalescing are written and their records committed, so the next
    persister reads none of them again."""
    import json
    import signal
    produce(broker, topics['metrics_topic'], [records.encode(records.metric(
        'stopping', timestamp=NOW - i, value=i)) for i in range(900)])
    proc = persister(batch_size=100, max_wait=1,
                     extra='max_delay = 3600\ncoalesce_points = 100000')
    assert wait_until(lambda: _processed(proc) == 900, 60), \
        proc.logtext()[-2000:]
    assert _count(influx, 'mon_stopping') == 0      # all of it coalesced
    proc.proc.send_signal(signal.SIGTERM)
    proc.proc.wait(30)
    assert _count(influx, 'mon_stopping') == 900, proc.logtext()[-2000:]
    assert 'every point written, committed' in proc.logtext()
    # The next persister: one marker per partition, written at once; had
    # any of the 900 not been committed it would come before its marker.
    again = persister(batch_size=100, max_wait=1, extra='max_delay = 0',
                      stats_file=str(tmp_path / 'again.json'))
    producer = broker.producer()
    for partition in range(4):
        producer.produce(topics['metrics_topic'], records.encode(
            records.metric('marker', timestamp=NOW + partition)),
            partition=partition)
    assert producer.flush(30) == 0

    def written():
        total = 0
        for path in tmp_path.glob('again.json.*'):
            try:
                total += json.loads(path.read_text())['totals'].get(
                    'points_written', 0)
            except ValueError:
                pass
        return total
    assert wait_until(lambda: _count(influx, 'mon_marker') == 4, 60), \
        again.logtext()[-2000:]
    assert wait_until(lambda: written() >= 4, 30)
    assert written() == 4 and _count(influx, 'mon_stopping') == 900


def test_a_batch_taken_whole_commits_only_what_is_written(
        influx_conf, influx):
    """The batched consumer hands the driver a whole batch: each tenant's
    points go into its buffer at once, yet no offset passes a point not
    written, and nothing is tracked before the batch is read (a SIGTERM's
    commit in between passes none of it)."""
    from monasca_persister_dbpt.commits.consumer import Messages
    from tests import hostile
    influx_conf.set_override('max_delay', 3600.0, 'dbpt')
    influx_conf.set_override('coalesce_points', 100, 'dbpt')
    repo = MetricsRepository(influx_conf)
    host_batch = repo.data_points_class()

    def message(tenant, offset, partition=0):
        return records.Message(records.encode(records.metric(
            tenant, timestamp=NOW + offset + 1000 * partition, value=offset)),
            offset, partition)
    batch = Messages([message('slow', 0)] +
                     [message('fast', n) for n in range(1, 151)] +
                     [records.Message(hostile.METRICS[0][1], 151)] +
                     [message('fast', n, partition=1) for n in range(10)])
    seen_at_refusal = []
    refuse = repo.reject

    def reject(*args, **kwargs):
        seen_at_refusal.append(repo.watermark.offsets())
        refuse(*args, **kwargs)
    repo.reject = reject
    assert repo.process_message(batch) == (None, None)
    assert seen_at_refusal == [{}]
    assert host_batch.get_count() == 161      # the refused one is not
    # fast's 150 points of partition 0 passed coalesce_points and are
    # written; its 10 of partition 1 and slow's one wait for max_delay,
    # and hold their partitions' commits back.
    assert wait_until(lambda: _count(influx, 'mon_fast') == 150, 30)
    assert repo.watermark.offsets() == {('metrics', 0): 0,
                                        ('metrics', 1): 0}
    repo.write_batch(repo.data_points_class())   # not due yet: nothing
    assert repo.watermark.offsets()[('metrics', 0)] == 0
    repo.buffers.flush(True)
    assert _count(influx, 'mon_slow') == 1 and \
        _count(influx, 'mon_fast') == 160
    assert repo.watermark.offsets() == {('metrics', 0): 152,
                                        ('metrics', 1): 10}
    assert repo.stats.snapshot()['totals']['records_refused'] == 1
