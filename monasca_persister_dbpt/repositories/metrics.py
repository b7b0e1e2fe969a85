"""The metrics driver: ``[repositories] metrics_driver``.

Writes what upstream's ``MetricInfluxdbRepository`` writes, byte for byte
(measurement = metric name; tags = dimensions, ``_tenant_id``, ``_region``;
fields ``value`` and ``value_meta``; ms precision), into the tenant's own
database, so monasca-api with ``db_per_tenant = True`` reads it unchanged.

Per record, the work that repeats (validating the tenant, escaping and
sorting the tags) is done once per series and cached: a Monasca deployment
sends the same series over and over with new values and timestamps.
"""

from __future__ import annotations

import json

from monasca_persister_dbpt.influx import line_protocol as lp
from monasca_persister_dbpt.repositories.base import ExactJsonNeeded
from monasca_persister_dbpt.repositories.base import inexact
from monasca_persister_dbpt.repositories.base import RecordRejected
from monasca_persister_dbpt.repositories.base import TenantRepository

#: Series keys remembered per worker process (memory stays bounded).
SERIES_CACHE_SIZE = 65536

_MIN_MS, _MAX_MS = lp.MIN_TIME_MS, lp.MAX_TIME_MS


class MetricsRepository(TenantRepository):
    kind = 'metric'

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._series: dict = {}

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
            key = self._series.get(cache_key)
        except (TypeError, AttributeError):  # unhashable or not an object
            cache_key = key = None
        if key is None:
            if not exact and inexact((name, region, dimensions)):
                raise ExactJsonNeeded()
            key = self._series_key(tenant_id, name, region, dimensions)
            if cache_key is not None:
                if len(self._series) >= SERIES_CACHE_SIZE:
                    self._series.clear()
                self._series[cache_key] = key

        value = metric['value']
        # repr(float) is the host's str(float(v)); v - v is 0 only if finite.
        if type(value) is float and value - value == 0:
            value = repr(value)
        else:
            value = lp.format_value(value)
        timestamp = metric['timestamp']
        if type(timestamp) is int and _MIN_MS < timestamp < _MAX_MS:
            timestamp = str(timestamp)
        else:
            timestamp = lp.format_time_ms(timestamp)
        value_meta = metric.get('value_meta')
        if not value_meta:
            return ('%s value=%s,value_meta="{}" %s'
                    % (key, value, timestamp), tenant_id)
        if not exact and inexact(value_meta):
            raise ExactJsonNeeded()
        return ('%s value=%s,value_meta=%s %s'
                % (key, value, _value_meta(value_meta), timestamp), tenant_id)

    def _series_key(self, tenant_id, name, region, dimensions) -> str:
        self.placements.place(tenant_id)
        if dimensions is None:
            tags = {}
        elif type(dimensions) is dict:
            # The host writes str() of whatever a dimension holds.
            tags = {k: v if type(v) is str else str(v)
                    for k, v in dimensions.items()}
        else:
            raise RecordRejected('dimensions %r is not an object'
                                 % (dimensions,))
        # Set last, as upstream does: a dimension cannot forge the tenant.
        tags['_tenant_id'] = tenant_id
        tags['_region'] = region if type(region) is str else str(region)
        return lp.series_key(name if type(name) is str else str(name), tags)


def _value_meta(value_meta) -> str:
    # Any JSON the host would store (an object, but also a list, a number
    # or a string), as the host dumps it.
    return lp.escape_string_field(json.dumps(value_meta, ensure_ascii=False))
