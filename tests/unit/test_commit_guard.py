import logging

import confluent_kafka
import pytest

from monasca_persister_dbpt.commits import guard as commit_guard


class _FakeLibConsumer:
    def __init__(self, error=None, assigned=()):
        self.calls = []
        self.error = error
        self.assigned = [confluent_kafka.TopicPartition(t, p)
                         for t, p in assigned]

    def assignment(self):
        return self.assigned

    def commit(self, **kwargs):
        self.calls.append(kwargs)
        if self.error is not None:
            raise confluent_kafka.KafkaException(
                confluent_kafka.KafkaError(self.error))


@pytest.fixture
def host_consumer(monkeypatch):
    from monasca_common.confluent_kafka import consumer
    host_commit = commit_guard.original_commit or \
        consumer.KafkaConsumer.commit
    monkeypatch.setattr(consumer.KafkaConsumer, 'commit', host_commit)
    monkeypatch.setattr(commit_guard, '_installed_in', None)
    monkeypatch.setattr(commit_guard, '_watermark', None)
    return consumer.KafkaConsumer


def _bare(cls, lib):
    obj = cls.__new__(cls)
    obj._consumer = lib
    obj._last_commit = None
    return obj


def test_unguarded_host_commits_asynchronously(host_consumer):
    lib = _FakeLibConsumer()
    _bare(host_consumer, lib).commit()
    assert lib.calls == [{}]


def test_guard_makes_the_host_commit_synchronously(host_consumer, caplog):
    caplog.set_level(logging.INFO)
    assert commit_guard.install(True)
    lib = _FakeLibConsumer()
    consumer = _bare(host_consumer, lib)
    consumer.commit()
    assert lib.calls == [{'asynchronous': False}]
    assert consumer._last_commit is not None
    assert 'commit guard installed' in caplog.text


def test_nothing_new_to_commit_does_not_end_the_worker(host_consumer):
    commit_guard.install(True)
    lib = _FakeLibConsumer(error=confluent_kafka.KafkaError._NO_OFFSET)
    _bare(host_consumer, lib).commit()  # no exception


@pytest.mark.parametrize('code', [
    confluent_kafka.KafkaError._TRANSPORT,
    confluent_kafka.KafkaError.REBALANCE_IN_PROGRESS,
    confluent_kafka.KafkaError.ILLEGAL_GENERATION,
    confluent_kafka.KafkaError.UNKNOWN_MEMBER_ID])
def test_a_failed_commit_is_logged_and_the_worker_goes_on(
        host_consumer, caplog, code):
    commit_guard.install(True)
    lib = _FakeLibConsumer(error=code)
    _bare(host_consumer, lib).commit()  # no exception: nothing is lost
    assert len(lib.calls) == 1
    assert 'Kafka commit failed' in caplog.text


def test_a_fatal_commit_error_still_raises(host_consumer):
    commit_guard.install(True)
    lib = _FakeLibConsumer()

    def commit(**kwargs):
        raise confluent_kafka.KafkaException(confluent_kafka.KafkaError(
            confluent_kafka.KafkaError._FATAL, fatal=True))
    lib.commit = commit
    with pytest.raises(confluent_kafka.KafkaException):
        _bare(host_consumer, lib).commit()


def test_guard_can_be_turned_off(host_consumer, caplog):
    original = host_consumer.commit
    assert not commit_guard.install(False)
    assert host_consumer.commit is original
    assert 'commit_guard is off' in caplog.text


def test_guard_is_inert_when_the_host_is_not_the_expected_shape(
        host_consumer, monkeypatch, caplog):
    def commit(self):
        return 'something else'
    monkeypatch.setattr(host_consumer, 'commit', commit)
    assert not commit_guard.install(True)
    assert host_consumer.commit is commit
    assert 'not the shape it expects' in caplog.text


def test_guard_installs_once_per_process(host_consumer):
    assert commit_guard.install(True)
    assert commit_guard.install(True)
    assert host_consumer.commit is commit_guard._guarded_commit


def test_with_a_watermark_only_written_records_of_owned_partitions_commit(
        host_consumer):
    from monasca_persister_dbpt.commits.watermark import Ticket, Watermark
    commit_guard.install(True)
    mark = Watermark()
    commit_guard.use(mark)
    pending = Ticket()
    mark.track(('m', 0), 5, pending)
    mark.skip(('m', 1), 9)
    mark.skip(('m', 2), 3)      # not ours (any more)
    lib = _FakeLibConsumer(assigned=[('m', 0), ('m', 1)])
    consumer = _bare(host_consumer, lib)
    consumer.commit()
    (call,) = lib.calls
    assert call['asynchronous'] is False
    assert sorted((tp.partition, tp.offset) for tp in call['offsets']) == \
        [(0, 5), (1, 10)]
    assert not commit_guard.commit_owed() or mark.owed()
    pending.done = True
    assert commit_guard.commit_owed()
    consumer.commit()
    assert sorted((tp.partition, tp.offset)
                  for tp in lib.calls[-1]['offsets']) == [(0, 6), (1, 10)]
    # A partition assigned anew starts over: stale tracking is dropped.
    mark.track(('m', 2), 50, Ticket())
    lib.assigned.append(confluent_kafka.TopicPartition('m', 2))
    consumer.commit()
    assert 2 not in {tp.partition for tp in lib.calls[-1]['offsets']}


def test_a_workers_share_is_its_partitions_over_the_topics(
        host_consumer, monkeypatch):
    """What the series caps divide by: unknown before the first commit,
    then the owned partitions over all of the topic's (from metadata)."""
    import types
    monkeypatch.setattr(commit_guard, '_consumer', None)
    monkeypatch.setattr(commit_guard, '_partitions', {})
    assert commit_guard.partition_share() is None
    commit_guard.install(True)
    lib = _FakeLibConsumer(assigned=[('metrics', 1), ('metrics', 3)])
    lib.list_topics = lambda topic, timeout: types.SimpleNamespace(
        topics={topic: types.SimpleNamespace(partitions=dict.fromkeys(
            range(8)))})
    _bare(host_consumer, lib).commit()
    assert commit_guard.partition_share() == 0.25
    lib.assigned = []
    assert commit_guard.partition_share() is None  # owns nothing now


def test_offsets_read_by_a_gauge_thread_never_pass_an_unwritten_record():
    """The stats thread reads the watermark's lag while the host's thread
    computes the commit: both pop written records off the same queue, and
    without a lock one popped a record the other had not seen done, so
    the commit passed a point not yet written (or the host's thread died
    on an empty queue)."""
    import sys
    import threading

    from monasca_persister_dbpt.commits.watermark import Ticket, Watermark
    partition = ('metrics', 0)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch as often as they can
    try:
        for _ in range(150):
            watermark = Watermark()
            tickets = [Ticket() for _ in range(3000)]
            for offset, ticket in enumerate(tickets):
                watermark.track(partition, offset, ticket)
            seen, errors = [], []
            stop = threading.Event()

            def read(watermark=watermark, seen=seen, errors=errors,
                     stop=stop):
                try:
                    while not stop.is_set():
                        seen.append(watermark.offsets()[partition])
                        watermark.lag()
                except Exception as exc:  # noqa: BLE001 - what we look for
                    errors.append(exc)
            readers = [threading.Thread(target=read) for _ in range(2)]
            for reader in readers:
                reader.start()
            for ticket in tickets[:2000]:
                ticket.done = True
            stop.set()
            for reader in readers:
                reader.join()
            assert errors == []
            assert max(seen) <= 2000
            assert watermark.offsets() == {partition: 2000}
    finally:
        sys.setswitchinterval(interval)
