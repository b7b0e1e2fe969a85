"""Take Kafka records in batches instead of one ``poll()`` each.

monasca-common's ``KafkaConsumer.__iter__`` calls ``Consumer.poll()`` once
per message and ``datetime.now()`` after each, to see whether
``max_commit_interval`` has passed: a few microseconds per record that the
host spends before any driver sees the record, a third of the whole
loop's cost when the driver itself is fast. This module replaces that one
method with one that calls ``Consumer.consume(num_messages, timeout)`` and
yields the same messages in the same order, keeping what the host's
promises:

- an error other than end-of-partition is logged and raised as
  ``KafkaException``, as the host does (the worker ends, uncommitted);
- end-of-partition events are skipped; an empty answer sleeps 0.1 s, as
  the host sleeps after an empty poll;
- the commit callback (the host's flush) is called once
  ``max_commit_interval`` has passed, checked after every batch (an empty
  one included, so a quiet topic still commits on time) instead of after
  every message;
- rebalance callbacks run inside ``consume()`` exactly as inside
  ``poll()``, and so does the graceful stop's signal handler;
- commits are untouched: the host commits after ``write_batch`` through
  the commit guard (:mod:`.guard`), which alone decides what is committed.

Our drivers take each batch whole (:class:`Messages`, one
``process_message`` call), so the host's own per-message loop runs once a
batch too.

The consumer the host creates is also given ``fetch.queue.backoff.ms``
(:func:`tune_fetch`): librdkafka stops prefetching while its queue is full
and then waits a whole second before it fetches again, so a worker that
empties the queue within that second waits in ``poll()`` with the broker
idle.

A batch holds at most ``[dbpt] consume_batch`` messages: what the client
has already fetched (``consume`` with no wait: with a timeout it would wait
for a whole batch); only when nothing is there does it wait, with
``poll()``, for the next message, so a record waits no longer than with
the host's loop.
"""

from __future__ import annotations

import datetime
import logging
import os
import time
import types

LOG = logging.getLogger(__name__)

#: How long one ``consume()`` waits for a first message (the host's poll).
TIMEOUT = 5.0

_installed_in = None
#: The host's own ``__iter__``, kept for tests and for turning it off.
original_iter = None
_batch = 0
#: Hand the driver each batch whole (:class:`Messages`) instead of one
#: message at a time.
_whole = False
#: Seconds the batched loop waited in ``poll()`` for a record, nothing
#: being fetched, and how many times (what bounds a worker, with the
#: buffers' wait for room).
waited_kafka = [0.0, 0]


class Messages(list):
    """The messages of one ``consume()``, handed to a driver that takes
    them whole in one ``process_message`` call: the host's loop then runs
    once a batch instead of once a message."""

    __slots__ = ()

    def __repr__(self) -> str:  # the host logs what it could not process
        return '<%d Kafka messages>' % len(self)


def _batched_iter(self):
    import confluent_kafka

    eof = confluent_kafka.KafkaError._PARTITION_EOF
    consume = self._consumer.consume
    callback = self._commit_callback
    interval = datetime.timedelta(seconds=self._max_commit_interval)
    self._last_commit = datetime.datetime.now()
    poll = self._consumer.poll
    whole = _whole
    while True:
        # What the client has fetched already, without waiting: consume()
        # with a timeout would wait for a whole batch. Only when nothing is
        # there, wait for one message as the host does.
        messages = consume(num_messages=_batch, timeout=0)
        if not messages:
            before = time.monotonic()
            first = poll(timeout=TIMEOUT)
            waited_kafka[0] += time.monotonic() - before
            waited_kafka[1] += 1
            messages = [first] if first is not None else ()
        batch = Messages()
        failed = None
        for message in messages:
            error = message.error()
            if error is None:
                batch.append(message)
            elif error.code() != eof:
                failed = error   # what came before it is delivered first
                break
        if whole:
            if batch:
                yield batch
        else:
            yield from batch
        if failed is not None:
            LOG.error('Kafka error: %s', failed.str())
            raise confluent_kafka.KafkaException(failed)
        if not batch:
            time.sleep(0.1)
        if callback is not None and \
                datetime.datetime.now() - self._last_commit > interval:
            callback()


#: librdkafka's first version with fetch.queue.backoff.ms (2.1.0).
FETCH_BACKOFF_SINCE = 0x02010000


class _TunedKafka(types.ModuleType):
    """``confluent_kafka`` as monasca-common's consumer module sees it: the
    same, except that the consumers it makes carry our settings on top of
    the host's (which has no way to pass any)."""

    def __init__(self, kafka: types.ModuleType, settings: dict) -> None:
        super().__init__(kafka.__name__)
        self._kafka = kafka
        self.settings = settings

    def __getattr__(self, name: str):
        return getattr(self._kafka, name)

    def Consumer(self, config: dict, *args, **kwargs):  # noqa: N802
        return self._kafka.Consumer({**config, **self.settings}, *args,
                                    **kwargs)


def tune_fetch(backoff_ms: int) -> bool:
    """Make the consumers the host creates in this process fetch again
    *backoff_ms* after their queue was full, instead of librdkafka's 1 s
    (``[dbpt] fetch_queue_backoff_ms``); False when off (-1), when
    librdkafka is older than the setting, or the host not as expected."""
    if backoff_ms < 0:
        return False
    try:
        import confluent_kafka
        from monasca_common.confluent_kafka import consumer as host
    except ImportError as exc:
        LOG.warning('fetch_queue_backoff_ms not applied: %s', exc)
        return False
    if confluent_kafka.libversion()[1] < FETCH_BACKOFF_SINCE:
        LOG.warning('fetch_queue_backoff_ms not applied: librdkafka %s has '
                    'no fetch.queue.backoff.ms (2.1.0 and later)',
                    confluent_kafka.libversion()[0])
        return False
    current = getattr(host, 'confluent_kafka', None)
    if isinstance(current, _TunedKafka):
        current.settings['fetch.queue.backoff.ms'] = backoff_ms
        return True
    if current is not confluent_kafka:
        LOG.warning('fetch_queue_backoff_ms not applied: monasca_common.'
                    'confluent_kafka.consumer does not create its consumer '
                    'with confluent_kafka.Consumer')
        return False
    host.confluent_kafka = _TunedKafka(confluent_kafka,
                                       {'fetch.queue.backoff.ms': backoff_ms})
    LOG.info('Kafka consumer fetches again %d ms after its queue was full '
             '(librdkafka waits 1000; [dbpt] fetch_queue_backoff_ms)',
             backoff_ms)
    return True


def host_consumer(what: str):
    """monasca-common's ``KafkaConsumer`` class, which the commit guard and
    this module patch; None (and *what* logged as not installed) without
    it."""
    try:
        from monasca_common.confluent_kafka import consumer
    except ImportError as exc:
        LOG.warning('%s not installed: %s', what, exc)
        return None
    return getattr(consumer, 'KafkaConsumer', None)


def install(batch: int, whole: bool = False) -> bool:
    """Patch the host's consumer once per process to consume *batch*
    messages at a time (*whole*: handed to the driver as one
    :class:`Messages`); False (and the host's loop kept) when *batch* is
    0 or the host is not the shape this expects."""
    global _installed_in, original_iter, _batch, _whole
    if _installed_in == os.getpid():
        return original_iter is not None
    _installed_in = os.getpid()
    if batch <= 0:
        return False
    _whole = whole
    target = host_consumer('batched consumer')
    current = getattr(target, '__iter__', None)
    if current is _batched_iter:  # patched before a fork
        _batch = batch
        return True
    names = getattr(getattr(current, '__code__', None), 'co_names', ())
    if not {'poll', '_commit_callback', '_max_commit_interval'} <= \
            set(names):
        LOG.warning('batched consumer not installed: monasca_common.'
                    'confluent_kafka.consumer.KafkaConsumer.__iter__ is not '
                    'the shape it expects (monasca-common 3.8.0); the host '
                    'polls one message at a time')
        return False
    original_iter = current
    _batch = batch
    target.__iter__ = _batched_iter
    LOG.info('batched consumer installed: up to %d Kafka messages per '
             'consume() instead of one poll() each ([dbpt] consume_batch)',
             batch)
    return True
