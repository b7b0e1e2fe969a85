"""The metrics driver: ``[repositories] metrics_driver``.

Writes what upstream's ``MetricInfluxdbRepository`` writes, byte for byte
(measurement = metric name; tags = dimensions, ``_tenant_id``, ``_region``;
fields ``value`` and ``value_meta``; ms precision), into the tenant's own
database, so monasca-api with ``db_per_tenant = True`` reads it unchanged.

Per record, the work that repeats (validating the tenant, escaping and
sorting the tags, the limits on a series' shape and count) is done once per
series and cached: a Monasca deployment sends the same series over and over
with new values and timestamps. Time, value_meta and rate limits are
checked per point (:mod:`monasca_persister_dbpt.limits`).
"""

from __future__ import annotations

import json

import orjson
from oslo_config import cfg

from monasca_persister_dbpt.commits import guard as commit_guard
from monasca_persister_dbpt.influx import line_protocol as lp
from monasca_persister_dbpt.limits import TenantLimits
from monasca_persister_dbpt.repositories.base import ExactJsonNeeded
from monasca_persister_dbpt.repositories.base import inexact
from monasca_persister_dbpt.repositories.base import RecordRejected
from monasca_persister_dbpt.repositories.base import TenantRepository

#: Series keys remembered per worker process (memory stays bounded).
SERIES_CACHE_SIZE = 65536
#: Seconds a count of a capped tenant's series waits for this worker's own
#: writes of the tenant to be stored first.
COUNT_WRITE_WAIT = 5.0

_MIN_MS, _MAX_MS = lp.MIN_TIME_MS, lp.MAX_TIME_MS
#: Floats whose repr() has no exponent, where orjson's text is repr()'s.
_PLAIN_MIN, _PLAIN_MAX = 1e-4, 1e15
_dumps = orjson.dumps


class MetricsRepository(TenantRepository):
    kind = 'metric'

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        #: (name, tenant, region, dimensions) -> what _series_key says of
        #: each series that passed its tenant's limits.
        self._series: dict = {}
        self.limits = TenantLimits.from_conf(
            self.conf.dbpt, self.placements, self.writer,
            workers=_workers(self.conf))
        self._limits_of = self.limits.table
        # Near its series cap a tenant's points are written at once, so
        # that the other workers' counts of its database see them.
        self.buffers.urgent = self.limits.series.near
        # Before each count, what this worker admitted is written (so the
        # others' counts hold it too), and its share is its partitions'.
        buffers = self.buffers
        self.limits.series.before_count = \
            lambda tenant_id: buffers.written(tenant_id, COUNT_WRITE_WAIT)
        self.limits.series.share_of = commit_guard.partition_share
        # A changed limit applies to series already admitted, too.
        self.placements.tenant_overrides.listeners.append(self._series.clear)
        self.stats.gauge('series_limit_bytes',
                         lambda: self.limits.series.nbytes)

    def to_line(self, record: dict, exact: bool = False) -> tuple[str, str]:
        metric = record['metric']
        meta = record['meta']
        tenant_id = meta['tenantId']
        name = metric['name']
        region = meta['region']
        dimensions = metric.get('dimensions')
        try:
            cache_key = (name, tenant_id, region,
                         tuple(dimensions.items()) if dimensions else ())
            known = self._series.get(cache_key)
        except (TypeError, AttributeError):  # unhashable or not an object
            cache_key = known = None
        if known is None:
            if not exact and inexact((name, region, dimensions)):
                raise ExactJsonNeeded()
            known = self._series_key(tenant_id, name, region, dimensions)
            new = True
        else:
            new = False
        key, placement, aged, limits, checked = known
        if checked and limits.blocked:
            self.limits.check_blocked(limits, tenant_id)

        value = metric['value']
        # repr(float) is the host's str(float(v)); v - v is 0 only if finite.
        if type(value) is float and value - value == 0:
            # orjson writes the same shortest digits five times faster,
            # and the same text where repr uses no exponent.
            value = _dumps(value).decode() \
                if _PLAIN_MIN <= abs(value) < _PLAIN_MAX or not value \
                else repr(value)
        else:
            value = lp.format_value(value)
        timestamp = metric['timestamp']
        if type(timestamp) is int and _MIN_MS < timestamp < _MAX_MS:
            ms = timestamp
            timestamp = str(timestamp)
        else:
            timestamp = lp.format_time_ms(timestamp)
            ms = int(timestamp)
        if checked and (aged or limits.max_future_seconds):
            self.limits.check_time(limits, placement, ms)
        value_meta = metric.get('value_meta')
        if value_meta:
            if not exact and inexact(value_meta):
                raise ExactJsonNeeded()
            dumped = json.dumps(value_meta, ensure_ascii=False)
            # Any JSON the host would store (an object, but also a list,
            # a number or a string), as the host dumps it.
            self.limits.check_value_meta(limits, dumped)
            line = '%s value=%s,value_meta=%s %s' % (
                key, value, lp.escape_string_field(dumped), timestamp)
        else:
            line = '%s value=%s,value_meta="{}" %s' % (key, value, timestamp)
        # What spends the tenant's allowance comes last.
        if checked and limits.ingestion_rate:
            self.limits.take(tenant_id, limits)
        if new:
            self.limits.admit_series(tenant_id, key, limits)
            if cache_key is not None:
                if len(self._series) >= SERIES_CACHE_SIZE:
                    self._series.clear()
                self._series[cache_key] = known
        return line, tenant_id

    def _series_key(self, tenant_id, name, region, dimensions) -> tuple:
        """(series key, placement, whether its retention is finite, the
        tenant's limits, whether any of them is checked per point): kept
        until the overrides change, which clears both caches."""
        placement = self.placements.place(tenant_id)
        limits = self._limits_of(tenant_id)
        if dimensions is None:
            tags = {}
        elif type(dimensions) is dict:
            # The host writes str() of whatever a dimension holds.
            tags = {k: v if type(v) is str else str(v)
                    for k, v in dimensions.items()}
        else:
            raise RecordRejected('dimensions %r is not an object'
                                 % (dimensions,))
        name = name if type(name) is str else str(name)
        if limits.shape_limited:
            self.limits.check_shape(limits, name, tags)
        # Set last, as upstream does: a dimension cannot forge the tenant.
        tags['_tenant_id'] = tenant_id
        tags['_region'] = region if type(region) is str else str(region)
        policy = placement.retention
        aged = policy is not None and policy.hours is not None
        return (lp.series_key(name, tags), placement, aged, limits,
                bool(aged or limits.blocked or limits.max_future_seconds or
                     limits.ingestion_rate))


def _workers(conf_obj) -> int:
    """Worker processes sharing the metrics topic (and so each limit)."""
    try:
        return max(1, int(conf_obj.kafka_metrics.num_processors))
    except (cfg.NoSuchOptError, AttributeError, TypeError, ValueError):
        return 1
