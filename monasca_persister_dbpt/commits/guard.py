"""Make monasca-persister commit only the Kafka records it has written.

The race: monasca-common's confluent consumer calls ``Consumer.commit()``
with no offsets and asynchronously. librdkafka stores each record's offset
when ``poll()`` hands it out and reads the stored offsets later, on its own
thread; by then the host loop has polled records of the next batch that live
only in memory, and their offsets get committed too. A worker killed before
the next flush loses them.

The guard: the host commits once per flush, right after ``write_batch``
returned, when every record handed out so far has been written. Committing
synchronously at that moment commits exactly those records and nothing
later, for one round trip per flush. A commit with nothing new to commit
(``_NO_OFFSET``) is normal and is not an error; a commit that fails (a
rebalance, the broker away) is logged and left to the next flush, since it
loses nothing.

With a :class:`~monasca_persister_dbpt.commits.watermark.Watermark`
registered (:func:`use`), the commit names its offsets: per assigned
partition, the low watermark, below which every record is written. Points
buffered across flushes (coalescing) or held for a server that is down are
simply not written yet, so they hold their partitions back and nothing
else: the host keeps flushing and committing everything before them.

Covers the default consumer (``[kafka] legacy_kafka_client_enabled =
False``). The legacy client commits the offsets it tracked itself,
synchronously, and is left alone.
"""

from __future__ import annotations

import datetime
import logging
import os
import time

from monasca_persister_dbpt.commits.consumer import host_consumer

LOG = logging.getLogger(__name__)

_installed_in: int | None = None
#: The host's own commit, kept for tests and for turning the guard off.
original_commit = None
#: Where explicit offsets come from (None: commit the consumer's position).
_watermark = None


def use(watermark) -> None:
    """Commit this watermark's offsets from now on (None: the position)."""
    global _watermark
    _watermark = watermark


def commit_owed() -> bool:
    """True when a commit would move the watermark forward."""
    return _watermark is not None and _watermark.owed()


def _assigned(self, watermark) -> set:
    """Partitions this consumer owns now; tracking of newly assigned ones
    starts over."""
    try:
        owned = {(tp.topic, tp.partition) for tp in
                 self._consumer.assignment()}
    except Exception:  # noqa: BLE001 - a closed consumer owns nothing
        return set()
    before = getattr(self, '_dbpt_assigned', None)
    if before is not None and owned - before:
        watermark.reset(owned - before)
    self._dbpt_assigned = owned
    return owned


#: The host's consumer wrapper, as last seen committing (for a graceful
#: stop, which commits from its own thread).
_consumer = None


#: topic -> (monotonic time read, its number of partitions).
_partitions: dict = {}


def partition_share() -> float | None:
    """This worker's share of its topics' records: the partitions it owns
    over all of theirs (monasca-api sends records without a key, so they
    spread evenly over the partitions, whichever process owns them).
    None before the host's first commit in this process, or when Kafka
    does not say."""
    consumer = _consumer
    if consumer is None:
        return None
    try:
        client = consumer._consumer
        owned = client.assignment()
        if not owned:
            return None
        total = 0
        for topic in {tp.topic for tp in owned}:
            when, count = _partitions.get(topic, (0.0, 0))
            if not count or time.monotonic() - when > 60:
                meta = client.list_topics(topic, timeout=5).topics[topic]
                count = len(meta.partitions)
                _partitions[topic] = (time.monotonic(), count)
            total += count
    except Exception:  # noqa: BLE001 - a closed consumer, no metadata
        return None
    return min(1.0, len(owned) / total) if total else None


def commit_now() -> bool:
    """Commit the watermark now, from any thread; False when the host has
    not committed yet in this process (no consumer known)."""
    consumer = _consumer
    if consumer is None or _watermark is None:
        return False
    _guarded_commit(consumer)
    return True


def _guarded_commit(self) -> None:
    import confluent_kafka

    global _consumer
    _consumer = self
    self._last_commit = datetime.datetime.now()
    watermark = _watermark
    offsets = None
    try:
        if watermark is None:
            self._consumer.commit(asynchronous=False)
        else:
            owned = _assigned(self, watermark)
            offsets = {p: o for p, o in watermark.offsets().items()
                       if p in owned}
            if not offsets:
                return
            self._consumer.commit(offsets=[
                confluent_kafka.TopicPartition(topic, partition, offset)
                for (topic, partition), offset in offsets.items()],
                asynchronous=False)
    except confluent_kafka.KafkaException as exc:
        error = exc.args[0] if exc.args else None
        code = getattr(error, 'code', lambda: None)()
        if code != confluent_kafka.KafkaError._NO_OFFSET:
            if getattr(error, 'fatal', lambda: False)():
                raise
            # A commit that fails loses nothing: the records stay
            # uncommitted and the next flush commits past them. Raising
            # would end the worker and then the whole persister, and a group
            # rebalance fails the commits of every member at once.
            # (Upstream's asynchronous commit never raised here.)
            LOG.warning('Kafka commit failed; the next flush commits '
                        'again, nothing is lost: %s', error)
        return
    if offsets is not None:
        watermark.committed(offsets)


def install(enabled: bool = True, legacy: bool = False) -> bool:
    """Patch the host's consumer once per process; True if the guard is on.

    With the legacy Kafka client (*legacy*) nothing is patched: that client
    commits the offsets it tracked itself, synchronously.
    """
    global _installed_in, original_commit
    if legacy:
        return False
    if _installed_in == os.getpid():
        return original_commit is not None
    if not enabled:
        LOG.warning('[dbpt] commit_guard is off: the persister may commit '
                    'Kafka records before they are written (see the '
                    'reliability page of monasca-persister-dbpt)')
        _installed_in = os.getpid()
        return False
    target = host_consumer('commit guard')
    commit = getattr(target, 'commit', None)
    if commit is _guarded_commit:  # patched before a fork
        _installed_in = os.getpid()
        return True
    if commit is None or commit.__code__.co_names[-1:] != ('commit',) or \
            '_consumer' not in commit.__code__.co_names:
        LOG.warning('commit guard not installed: monasca_common.'
                    'confluent_kafka.consumer.KafkaConsumer.commit is not the '
                    'shape it expects (monasca-common 3.8.0); upstream commit '
                    'behaviour is kept')
        return False
    original_commit = commit
    target.commit = _guarded_commit
    _installed_in = os.getpid()
    LOG.info('commit guard installed: the persister now commits Kafka '
             'offsets synchronously, only past written records '
             '(monasca_common.confluent_kafka.consumer.KafkaConsumer.commit)')
    return True
