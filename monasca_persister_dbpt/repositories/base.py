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
import json
import logging
from typing import Any, Optional

import orjson
from oslo_config import cfg

from monasca_persister_dbpt import commit_guard
from monasca_persister_dbpt.backlog import Backlog
from monasca_persister_dbpt import conf
from monasca_persister_dbpt.influx.line_protocol import InvalidPoint
from monasca_persister_dbpt.influx.writer import InfluxWriter
from monasca_persister_dbpt.placement import InvalidTenantId, PlacementMap
from monasca_persister_dbpt.repositories.batch import TenantBatch
from monasca_persister_dbpt.stats import Stats

LOG = logging.getLogger(__name__)


class RecordRejected(ValueError):
    """A Kafka record that cannot be stored; the message says why."""


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
        guarded = commit_guard.install(conf_obj.dbpt.commit_guard)
        self.placements = PlacementMap.from_conf(conf_obj)
        dbpt = conf_obj.dbpt
        self.stats = Stats(interval=dbpt.stats_interval, path=dbpt.stats_file)
        self.writer = InfluxWriter(
            concurrency=dbpt.write_concurrency,
            request_timeout=dbpt.request_timeout,
            retry_timeout=dbpt.retry_timeout,
            backoff_max=dbpt.retry_backoff_max, stats=self.stats)
        self.chunk_size = conf_obj.influxdb.batch_size
        self.pipeline_points = dbpt.pipeline_points
        self.hold_after = dbpt.hold_after
        self.backlog = self._backlog(conf_obj, guarded)
        self.data_points_class = self._new_batch

    def _backlog(self, conf_obj: cfg.ConfigOpts,
                 guarded: bool) -> Optional[Backlog]:
        """A backlog for down servers, if commits can wait for it."""
        if conf_obj.dbpt.held_points_max == 0:
            return None
        kafka = getattr(conf_obj, 'kafka', None)
        legacy = getattr(kafka, 'legacy_kafka_client_enabled', False) \
            if kafka is not None else False
        if not guarded or legacy:
            LOG.warning('[dbpt] held_points_max is ignored: commits can only '
                        'wait for held points with the commit guard and the '
                        'default Kafka client; a down server fails the whole '
                        'batch after [dbpt] retry_timeout')
            return None
        backlog = Backlog(self.writer, conf_obj.dbpt.held_points_max,
                          self.stats)
        commit_guard.pause_while(backlog.holding)
        self.stats.gauge('points_held', backlog.held)
        return backlog

    def _new_batch(self) -> TenantBatch:
        return TenantBatch(self.placements, self.writer, self.chunk_size,
                           self.pipeline_points, self.backlog,
                           self.hold_after)

    def process_message(self, message):
        raw = message.value()
        try:
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                record = self._lenient_json(raw, exc)
            return self.to_line(record)
        except (RecordRejected, InvalidPoint, InvalidTenantId) as exc:
            reason = str(exc)
        except KeyError as exc:
            reason = 'missing field %s' % exc
        except (TypeError, AttributeError) as exc:
            reason = 'record does not have the expected shape (%s)' % exc
        self.reject(message, reason)
        return None, None

    @staticmethod
    def _lenient_json(raw, exc):
        # The stdlib parser also reads NaN and Infinity, so such a record is
        # refused for its value, which says more than "malformed JSON".
        try:
            return json.loads(raw)
        except (ValueError, TypeError):
            raise RecordRejected('malformed JSON: %s' % exc) from None

    def reject(self, message, reason: str) -> None:
        where = ''
        topic = getattr(message, 'topic', None)
        if callable(topic):
            where = ' at %s[%s]@%s' % (topic(), message.partition(),
                                       message.offset())
        LOG.warning('refused %s%s: %s', self.kind, where, reason)
        self.stats.add(None, 'records_refused')

    @abc.abstractmethod
    def to_line(self, record: dict) -> tuple[str, str]:
        """One decoded record -> ``(line, tenant_id)``, or raise with a reason."""

    def write_batch(self, data_points) -> None:
        if isinstance(data_points, TenantBatch):
            data_points.flush()
        else:  # a container of the host's kind: tenant -> lines, or lines
            items = data_points.items() if hasattr(data_points, 'items') \
                else [(None, list(data_points))]
            batch = self._new_batch()
            for tenant, lines in items:
                for line in lines:
                    batch.append(tenant, line)
            batch.flush()
        self.stats.maybe_report()
