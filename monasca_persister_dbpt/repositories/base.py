"""What the host persister calls on a driver, and the shared InfluxDB base.

The host instantiates a driver with no arguments in each worker process, so
all configuration comes from ``oslo_config.cfg.CONF``. Per message it calls
``process_message``; per flush ``write_batch`` on a container it built from
``data_points_class``. A record we refuse is logged once with its reason,
counted, and kept out of the batch, so it can neither fail the batch nor be
written anywhere.
"""

from __future__ import annotations

import abc
import gc
import json
import logging
import multiprocessing
import operator
import os
from typing import Any, Optional

import orjson
from oslo_config import cfg

from monasca_persister_dbpt import conf
from monasca_persister_dbpt.commits import consumer
from monasca_persister_dbpt.commits import guard as commit_guard
from monasca_persister_dbpt.commits import stop
from monasca_persister_dbpt.commits.buffers import TenantBuffers
from monasca_persister_dbpt.commits.outages import Outages
from monasca_persister_dbpt.commits.spill import Spill, SpillUnusable
from monasca_persister_dbpt.commits.stale_ranges import StaleRecorder
from monasca_persister_dbpt.commits.watermark import Watermark
from monasca_persister_dbpt.influx import identity
from monasca_persister_dbpt.influx.line_protocol import InvalidPoint
from monasca_persister_dbpt.influx.write_process import WriteProcess
from monasca_persister_dbpt.influx.writer import InfluxWriter
from monasca_persister_dbpt.limits import LimitExceeded, TenantLimits
from monasca_persister_dbpt.limits.exposition import PrometheusExporter
from monasca_persister_dbpt.placement import InvalidTenantId, PlacementMap
from monasca_persister_dbpt.repositories.batch import TenantBatch
from monasca_persister_dbpt.stats import LogThrottle, Stats

LOG = logging.getLogger(__name__)


class RecordRejected(ValueError):
    """A Kafka record that cannot be stored; the message says why."""


class ExactJsonNeeded(Exception):
    """The record holds a number orjson could not read exactly."""


def inexact(obj) -> bool:
    """A float where orjson may have read an integer beyond 64 bits (it
    reads those as floats; the host writes them as integers)."""
    kind = type(obj)
    if kind is float:
        return abs(obj) >= 9.2e18
    if kind is dict:
        return any(inexact(v) for v in obj.values())
    if kind is list or kind is tuple:
        return any(inexact(v) for v in obj)
    return False



def _tune_gc(threshold: int) -> None:
    """Run the collector's youngest generation every *threshold* new
    objects (``[dbpt] gc_threshold``): each record parses into dicts, and
    with Python's 700 the full passes over everything alive (the buffered
    points' tickets, the watermark) grew with the tenants."""
    if threshold <= 0 or gc.get_threshold()[0] == threshold:
        return
    gc.set_threshold(threshold, *gc.get_threshold()[1:])
    LOG.info('garbage collector runs after %d new objects ([dbpt] '
             'gc_threshold; Python\'s default is 700)', threshold)


#: Tracking order of a batch's (partition, first offset, ticket) entries.
_entry_order = operator.itemgetter(0, 1)


def _where(message) -> str:
    topic = getattr(message, 'topic', None)
    if callable(topic):
        return ' at %s[%s]@%s' % (topic(), message.partition(),
                                  message.offset())
    return ''


class Repository(abc.ABC):
    """A monasca-persister driver: Kafka record in, stored point out."""

    #: Callable building the container the host appends to and flushes.
    data_points_class: Any

    @abc.abstractmethod
    def process_message(self, message) -> tuple[Optional[str], Optional[str]]:
        """Turn one Kafka message into ``(point, tenant_id)``.

        ``(None, None)`` means the record was refused (and already logged).
        """

    @abc.abstractmethod
    def write_batch(self, data_points) -> None:
        """Store a batch; raise only when it must not be committed."""


class TenantRepository(Repository):
    """Shared part of our drivers: placement, writer, refusal handling."""

    #: Which record this driver reads, for log lines.
    kind = 'record'

    def __init__(self, conf_obj: cfg.ConfigOpts = cfg.CONF) -> None:
        conf.register_opts(conf_obj)
        self.conf = conf_obj
        dbpt = conf_obj.dbpt
        try:
            conf.check(conf_obj)
            self.placements = PlacementMap.from_conf(conf_obj)
            self.stats = Stats(interval=dbpt.stats_interval,
                               path=dbpt.stats_file)
            self.exporter = PrometheusExporter(
                self.stats, dbpt.prometheus_textfile_dir,
                dbpt.prometheus_address, dbpt.prometheus_interval)
        except ValueError as exc:
            # The host ends every worker when one exits, before any record
            # is consumed: a bad config stops start-up instead of dropping
            # data later.
            LOG.error('monasca-persister-dbpt refuses to start: %s', exc)
            raise
        _tune_gc(dbpt.gc_threshold)
        kafka = getattr(conf_obj, 'kafka', None)
        legacy = bool(getattr(kafka, 'legacy_kafka_client_enabled', False)) \
            if kafka is not None else False
        guarded = commit_guard.install(dbpt.commit_guard, legacy)
        batched = False
        if not legacy:
            batched = consumer.install(dbpt.consume_batch, whole=True)
            consumer.tune_fetch(dbpt.fetch_queue_backoff_ms)
        #: Per-tenant limits, where the driver applies them.
        self.limits: Optional[TenantLimits] = None
        self._limit_log = LogThrottle(logger=LOG)
        self.writer = InfluxWriter(
            concurrency=dbpt.write_concurrency,
            request_timeout=dbpt.request_timeout,
            retry_timeout=dbpt.retry_timeout,
            backoff_max=dbpt.retry_backoff_max, stats=self.stats)
        known = self._check_servers(dbpt)
        self.buffers, self.watermark, buffering = self._buffers(
            conf_obj, guarded and not legacy, known)
        if self.watermark is not None and \
                multiprocessing.parent_process() is not None:
            # A worker of the host (never a test or a tool of ours): on
            # SIGTERM, write what is buffered and commit before exiting.
            stop.install(self.buffers)
        #: ((topic, partition), offset) of the record being processed.
        self._position: list = [None, None]
        #: True while a batch taken whole is read (see _process_many).
        self._many = False
        self._host_batch: Optional[TenantBatch] = None
        self.data_points_class = self._new_batch
        if batched:
            self.stats.gauge('kafka_wait_seconds',
                             lambda: round(consumer.waited_kafka[0], 3))
            self.stats.gauge('kafka_waits', lambda: consumer.waited_kafka[1])
        self.exporter.start()
        LOG.info('monasca-persister-dbpt %s driver in pid %d: %s; %s; '
                 'databases %s', self.kind, os.getpid(),
                 'Kafka commits: synchronous, at the low watermark of '
                 'written records (commit guard)' if guarded and not legacy
                 else 'Kafka commits: the legacy client\'s own '
                 '(synchronous, offsets it tracked)' if legacy else
                 'Kafka commits: the host\'s own, asynchronous ([dbpt] '
                 'commit_guard is off or could not be installed)', buffering,
                 self.placements.describe())

    def _check_servers(self, dbpt) -> dict:
        """Refuse a config naming one influxd twice (the rebalance would
        drop what it copied onto itself); a server that does not answer
        costs only its wait, bounded like a write's before it is held."""
        try:
            found = identity.identify(self.writer, self.placements.servers,
                                      retry_for=min(dbpt.retry_timeout,
                                                    max(dbpt.hold_after, 1.0)))
        except identity.SameServer as exc:
            LOG.error('monasca-persister-dbpt refuses to start: %s', exc)
            raise
        self._new_servers = [self.placements.servers[n] for n in found.new]
        return {self.placements.servers[name]: ids[0]
                for name, ids in found.ids.items() if ids}

    def _buffers(self, conf_obj: cfg.ConfigOpts, controlled: bool,
                 known_ids: Optional[dict] = None):
        """The tenant buffers, the watermark (when commits can follow it),
        and a line saying what is on."""
        dbpt = conf_obj.dbpt
        max_delay, held_max = dbpt.max_delay, dbpt.held_points_max
        words = []
        if not controlled:
            if max_delay:
                words.append('coalescing off (needs the commit guard and '
                             'the default Kafka client)')
            max_delay, held_max = 0.0, 0
        elif max_delay:
            words.append('coalescing up to %d points or %.3gs per tenant'
                         % (dbpt.coalesce_points, max_delay))
        else:
            words.append('coalescing off ([dbpt] max_delay = 0)')
        if held_max == 0:
            words.append('held points off%s: a down server fails the batch '
                         'after [dbpt] retry_timeout' % (
                             ' ([dbpt] held_points_max = 0)' if controlled
                             else ''))
        else:
            words.append('points of a down server held up to %d, only the '
                         'records behind them wait' % held_max)
        spill = self._spill(dbpt) if held_max else None
        if spill is not None:
            words.append('points of a down server spilled to %s (at most %d '
                         'bytes) and committed' % (spill.directory,
                                                   spill.max_bytes))
        recorder = None
        servers = set(self.placements.servers.values())
        if len(servers) > 1:
            # Replicas may be named at run time (the overrides file).
            recorder = StaleRecorder(servers, self.writer, self.stats,
                                     known_ids)
            self.writer.on_recreate.append(recorder.check_ids)
            recorder.gauges(self.stats)
            if self.placements.replicated:
                for server in getattr(self, '_new_servers', ()):
                    # Its replicas lack what the others hold, until
                    # --repair (or --rebalance) copies it there.
                    recorder.reborn(server, 'had no server id although the '
                                    'others had met it (it came back '
                                    'without its data)')
                recorder.flush()
        if self.placements.server_map.replicas > 1:
            words.append('%d replicas per tenant, a down one given up for '
                         'a stale range after %.0fs held in memory' % (
                             self.placements.server_map.replicas,
                             dbpt.replica_stale_after))
        poster = None
        if dbpt.write_process:
            poster = WriteProcess(dbpt.write_concurrency,
                                  dbpt.request_timeout)
            words.append('writes posted by a child process first ([dbpt] '
                         'write_process)')
        buffers = TenantBuffers(
            self.placements, self.writer, self.stats,
            chunk_points=conf_obj.influxdb.batch_size,
            coalesce_points=dbpt.coalesce_points, max_delay=max_delay,
            buffered_max=dbpt.buffered_points_max, held_max=held_max,
            hold_after=dbpt.hold_after if held_max else None, spill=spill,
            stale=recorder, stale_after=dbpt.replica_stale_after,
            poster=poster,
            buffered_bytes=dbpt.buffered_memory_mb * 2 ** 20)
        words.append('up to %d points buffered, or %d MiB of their lines'
                     % (dbpt.buffered_points_max, dbpt.buffered_memory_mb))
        if recorder is not None:
            recorder.waiting = buffers.waiting_for
            buffers.on_tick.append(recorder.tick)
        self.outages = Outages(self.placements, self.writer, buffers,
                               self.stats)
        watermark = None
        if controlled:
            watermark = Watermark()
            commit_guard.use(watermark)
            self.stats.gauge('watermark_lag', watermark.lag)
        self.stats.gauge('points_per_request', self._points_per_request)
        return buffers, watermark, '; '.join(words)

    @staticmethod
    def _spill(dbpt) -> Optional[Spill]:
        """The spill, or None: off when set empty, or when the default
        folder cannot be written (said at start); a folder the operator
        set that cannot be written stops start-up."""
        if not dbpt.spill_dir:
            return None
        try:
            return Spill(dbpt.spill_dir, dbpt.spill_max_bytes)
        except SpillUnusable as exc:
            if dbpt.spill_dir != conf.dbpt.SPILL_DIR:
                LOG.error('monasca-persister-dbpt refuses to start: %s', exc)
                raise
            LOG.warning('%s: the spill is off, so a down InfluxDB server\'s '
                        'points are held in memory (held_points_max); set '
                        '[dbpt] spill_dir to a folder the persister can '
                        'write', exc)
            return None

    def _points_per_request(self) -> float:
        requests = self.stats.total('write_requests')
        return round(self.stats.total('points_written') / requests, 1) \
            if requests else 0.0

    def _new_batch(self) -> TenantBatch:
        self._host_batch = TenantBatch(self.buffers, self.watermark,
                                       self._position)
        return self._host_batch

    def process_message(self, message):
        if type(message) is consumer.Messages:
            return self._process_many(message)
        if self.watermark is not None:
            position = self._position
            position[0] = (message.topic(), message.partition())
            position[1] = message.offset()
        return self._line_of(message)

    def _line_of(self, message):
        """A message's ``(line, tenant_id)``, or ``(None, None)`` when it
        is refused (logged, counted, its position passed)."""
        raw = message.value()
        record = None
        try:
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                record = self._lenient_json(raw, exc)
            try:
                return self.to_line(record)
            except ExactJsonNeeded:
                # orjson read an integer beyond 64 bits as a float; the
                # host's parser keeps it exact, and so does the stdlib's.
                record = self._lenient_json(raw, None)
                return self.to_line(record, exact=True)
        except LimitExceeded as exc:
            self.limited(message, record, exc)
            return None, None
        except (RecordRejected, InvalidPoint, InvalidTenantId) as exc:
            reason = str(exc)
        except KeyError as exc:
            reason = 'missing field %s' % exc
        except (TypeError, AttributeError) as exc:
            reason = 'record does not have the expected shape (%s)' % exc
        self.reject(message, reason, self._tenant_of(record))
        self._skip()
        return None, None

    def _skip(self) -> None:
        """A refused record: only its partition's position moves (at the
        end of a batch taken whole, see :meth:`_process_many`)."""
        if self.watermark is not None and not self._many:
            self.watermark.skip(*self._position)

    def _process_many(self, messages) -> tuple:
        """A whole batch of the batched consumer: the host's loop runs
        once for it, and each tenant's points go into its buffer in one
        step, tracked once per tenant and partition.

        Nothing is tracked until every message is read: a SIGTERM's stop
        in between commits only what came before the batch. A tenant
        near its series cap is buffered at once, as one message would be.
        """
        line_of = self._line_of
        urgent = self.buffers.urgent
        put = self.buffers.put
        tracked = self.watermark is not None
        groups: dict = {}    # (partition, tenant) -> its lines
        puts = []            # (tenant, lines), a group each
        firsts = []          # (partition, first offset), a group each
        entries = []         # (partition, first offset, ticket)
        last: dict = {}      # partition -> its last offset in the batch
        partition = offset = None
        accepted = 0
        self._many = True
        try:
            for message in messages:
                try:
                    line, tenant = line_of(message)
                except Exception:  # noqa: BLE001 - the host's own rule
                    LOG.exception('Error processing message. Message is '
                                  'being dropped. %s', message)
                    line = None
                if tracked:
                    partition = (message.topic(), message.partition())
                    offset = last[partition] = message.offset()
                if line is None:
                    continue
                accepted += 1
                if tenant in urgent:
                    entries.append((partition, offset, put(tenant, (line,))))
                    continue
                lines = groups.get((partition, tenant))
                if lines is None:
                    lines = groups[(partition, tenant)] = [line]
                    puts.append((tenant, lines))
                    firsts.append((partition, offset))
                else:
                    lines.append(line)
        finally:
            self._many = False
        entries.extend((partition, offset, ticket) for (partition, offset),
                       ticket in zip(firsts, self.buffers.put_many(puts)))
        if tracked:
            entries.sort(key=_entry_order)
            self.watermark.track_many(entries)
            for partition, offset in last.items():
                self.watermark.skip(partition, offset)
        if self._host_batch is not None:
            self._host_batch.counted(accepted)
        self.buffers.relieve()
        return None, None

    def _tenant_of(self, record) -> Optional[str]:
        """The record's tenant, if it is readable and valid (else None, so
        a flood of bad ids lands in one bounded "unknown" counter)."""
        try:
            tenant = self.tenant_in(record)
            self.placements.validate(tenant)
        except Exception:  # noqa: BLE001 - any shape at all
            return None
        return tenant

    @staticmethod
    def tenant_in(record):
        """Where this driver's records carry their tenant id."""
        return record['meta']['tenantId']

    @staticmethod
    def _lenient_json(raw, exc):
        # The stdlib parser also reads NaN and Infinity, so such a record is
        # refused for its value, which says more than "malformed JSON".
        try:
            return json.loads(raw)
        except (ValueError, TypeError):
            raise RecordRejected('malformed JSON: %s' % exc) from None

    def limited(self, message, record, exc: LimitExceeded) -> None:
        """A point over its tenant's limit: counted, logged once a minute
        per tenant and reason, committed."""
        tenant = self._tenant_of(record)
        self.stats.add(tenant, 'refused_' + exc.reason)
        self._limit_log.log(
            (tenant, exc.reason), logging.WARNING,
            'refused %s(s) of tenant %s over its limit (refused_%s, '
            'committed), e.g.%s: %s', self.kind, tenant, exc.reason,
            _where(message), exc.detail)
        self._skip()

    def reject(self, message, reason: str,
               tenant: Optional[str] = None) -> None:
        LOG.warning('refused %s%s%s: %s', self.kind,
                    ' of tenant %s' % tenant if tenant else '',
                    _where(message), reason)
        self.stats.add(tenant, 'records_refused')

    @abc.abstractmethod
    def to_line(self, record: dict, exact: bool = False) -> tuple[str, str]:
        """One decoded record -> ``(line, tenant_id)``, or raise with a reason."""

    def write_batch(self, data_points) -> None:
        if isinstance(data_points, TenantBatch):
            data_points.flush()
        else:  # a container of the host's kind: tenant -> lines, or lines
            items = data_points.items() if hasattr(data_points, 'items') \
                else [(None, list(data_points))]
            batch = TenantBatch(self.buffers, None, self._position,
                                everything=True)
            for tenant, lines in items:
                for line in lines:
                    batch.append(tenant, line)
            batch.flush()
        self.stats.maybe_report()
        self.exporter.start()
