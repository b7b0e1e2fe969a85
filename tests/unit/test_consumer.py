"""The batched consumer keeps what the host's one-poll-per-message loop
promises: the same messages in order, errors, end-of-partition, the commit
interval on a quiet topic. A fake librdkafka consumer stands for Kafka."""

import datetime

import confluent_kafka
import pytest

from monasca_persister_dbpt.commits import consumer as batched


class _Msg:
    def __init__(self, value, error=None):
        self._value, self._error = value, error

    def value(self):
        return self._value

    def error(self):
        return self._error


class _Lib:
    """Hands out the given batches: consume() the first batch left, poll()
    its first message (the host's own loop polls one at a time)."""

    def __init__(self, batches):
        self.batches = [list(b) for b in batches]
        self.asked = []

    def consume(self, num_messages, timeout):
        self.asked.append((num_messages, timeout))
        # A loop that never returns to its caller fails, not hangs.
        assert len(self.asked) < 1000, 'consume() called 1000 times'
        return self.batches.pop(0) if self.batches else []

    def poll(self, timeout):
        while self.batches and not self.batches[0]:
            self.batches.pop(0)
        return self.batches[0].pop(0) if self.batches else None


@pytest.fixture
def host(monkeypatch):
    from monasca_common.confluent_kafka import consumer
    original = batched.original_iter or consumer.KafkaConsumer.__iter__
    monkeypatch.setattr(consumer.KafkaConsumer, '__iter__', original)
    monkeypatch.setattr(batched, '_installed_in', None)
    monkeypatch.setattr(batched, 'original_iter', None)
    monkeypatch.setattr(batched, '_whole', False)
    monkeypatch.setattr(batched.time, 'sleep', lambda s: None)
    return consumer.KafkaConsumer


def _consumer(cls, lib, callback=None, interval=30):
    obj = cls.__new__(cls)
    obj._consumer = lib
    obj._commit_callback = callback
    obj._max_commit_interval = interval
    obj._last_commit = None
    return obj


def _take(iterator, n):
    return [next(iterator).value() for _ in range(n)]


def test_the_same_messages_in_the_same_order_as_the_hosts_loop(host):
    eof = confluent_kafka.KafkaError(confluent_kafka.KafkaError._PARTITION_EOF)
    batches = [[_Msg(1), _Msg(2)], [_Msg(None, eof)], [_Msg(3), _Msg(4),
                                                      _Msg(None, eof),
                                                      _Msg(5)]]
    hosts = _take(iter(_consumer(host, _Lib(batches))), 5)
    assert batched.install(500)
    lib = _Lib(batches)
    ours = _take(iter(_consumer(host, lib)), 5)
    assert ours == hosts == [1, 2, 3, 4, 5]
    # Never a wait for a whole batch: what is fetched, or poll() for one.
    assert set(lib.asked) == {(500, 0)}


def test_a_kafka_error_is_raised_as_the_host_raises_it(host):
    assert batched.install(10)
    bad = confluent_kafka.KafkaError(confluent_kafka.KafkaError._ALL_BROKERS_DOWN)
    it = iter(_consumer(host, _Lib([[_Msg(1), _Msg(None, bad), _Msg(2)]])))
    assert next(it).value() == 1
    with pytest.raises(confluent_kafka.KafkaException):
        next(it)


def test_a_quiet_topic_still_calls_the_commit_callback_on_time(host):
    assert batched.install(10)
    calls = []

    def commit():  # the host's flush, which commits
        calls.append(1)
        obj._last_commit = datetime.datetime.now()
        raise StopIteration  # out of the endless loop, as a test can
    obj = _consumer(host, _Lib([[_Msg(1)]]), callback=commit, interval=30)
    it = iter(obj)
    assert next(it).value() == 1
    assert calls == []  # the interval has not passed
    obj._last_commit = datetime.datetime.now() - datetime.timedelta(
        seconds=31)
    with pytest.raises(RuntimeError):  # the StopIteration, from a generator
        next(it)  # only empty batches from now on
    assert calls == [1]


def test_zero_or_an_unexpected_host_keeps_the_hosts_loop(host, monkeypatch):
    assert not batched.install(0)
    assert host.__iter__ is not batched._batched_iter
    monkeypatch.setattr(batched, '_installed_in', None)

    def other(self):
        yield from ()
    monkeypatch.setattr(host, '__iter__', other)
    assert not batched.install(100)
    assert host.__iter__ is other


def test_batches_taken_whole_keep_the_order_and_end_at_an_error(host):
    assert batched.install(10, whole=True)
    eof = confluent_kafka.KafkaError(confluent_kafka.KafkaError._PARTITION_EOF)
    bad = confluent_kafka.KafkaError(confluent_kafka.KafkaError._ALL_BROKERS_DOWN)
    lib = _Lib([[_Msg(1), _Msg(None, eof), _Msg(2)], [_Msg(3), _Msg(None, bad),
                                                     _Msg(4)]])
    it = iter(_consumer(host, lib))
    first = next(it)
    assert type(first) is batched.Messages and \
        [m.value() for m in first] == [1, 2]
    assert [m.value() for m in next(it)] == [3]   # what came before it
    with pytest.raises(confluent_kafka.KafkaException):
        next(it)
    assert repr(first) == '<2 Kafka messages>'


@pytest.fixture
def host_module(monkeypatch):
    from monasca_common.confluent_kafka import consumer
    monkeypatch.setattr(consumer, 'confluent_kafka', confluent_kafka)
    made = []
    monkeypatch.setattr(confluent_kafka, 'Consumer',
                        lambda config, *a, **k: made.append(config))
    return consumer, made


def test_the_hosts_consumer_fetches_again_soon_after_a_full_queue(
        host_module):
    consumer, made = host_module
    assert batched.tune_fetch(10)
    assert batched.tune_fetch(25)       # a second driver: set again, once
    consumer.confluent_kafka.Consumer({'group.id': 'g'})
    assert made == [{'group.id': 'g', 'fetch.queue.backoff.ms': 25}]
    # Everything else is confluent_kafka's own.
    assert consumer.confluent_kafka.KafkaError is confluent_kafka.KafkaError


def test_minus_one_or_an_old_librdkafka_leaves_the_consumer_as_it_is(
        host_module, monkeypatch):
    consumer, made = host_module
    assert not batched.tune_fetch(-1)
    monkeypatch.setattr(confluent_kafka, 'libversion',
                        lambda: ('2.0.2', 0x020002ff))
    assert not batched.tune_fetch(10)
    assert consumer.confluent_kafka is confluent_kafka
