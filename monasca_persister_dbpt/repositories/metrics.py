"""The metrics driver: ``[repositories] metrics_driver``.

Writes what upstream's ``MetricInfluxdbRepository`` writes, byte for byte
(measurement = metric name; tags = dimensions, ``_tenant_id``, ``_region``;
fields ``value`` and ``value_meta``; ms precision), into the tenant's own
database, so monasca-api with ``db_per_tenant = True`` reads it unchanged.
"""

from __future__ import annotations

import json

from monasca_persister_dbpt.influx import line_protocol as lp
from monasca_persister_dbpt.repositories.base import RecordRejected
from monasca_persister_dbpt.repositories.base import TenantRepository

#: Longest value_meta (as JSON) accepted; monasca-api itself allows 2048.
MAX_VALUE_META_BYTES = 65535


class MetricsRepository(TenantRepository):
    kind = 'metric'

    def to_line(self, record: dict) -> tuple[str, str]:
        metric = record['metric']
        meta = record['meta']
        tenant_id = meta['tenantId']
        self.placements.place(tenant_id)
        dimensions = metric.get('dimensions')
        if dimensions is None:
            tags = {}
        elif type(dimensions) is dict:
            tags = dict(dimensions)
        else:
            raise RecordRejected('dimensions %r is not an object'
                                 % (dimensions,))
        # Set last, as upstream does: a dimension cannot forge the tenant.
        tags['_tenant_id'] = tenant_id
        tags['_region'] = meta['region']
        key = lp.series_key(metric['name'], tags)
        value = lp.format_value(metric['value'])
        value_meta = metric.get('value_meta')
        if not value_meta:
            meta_field = '"{}"'
        elif type(value_meta) is dict:
            text = json.dumps(value_meta, ensure_ascii=False)
            if len(text) > MAX_VALUE_META_BYTES // 4 and \
                    len(text.encode('utf-8')) > MAX_VALUE_META_BYTES:
                raise RecordRejected('value_meta is longer than %d bytes'
                                     % MAX_VALUE_META_BYTES)
            meta_field = lp.escape_string_field(text)
        else:
            raise RecordRejected('value_meta %r is not an object'
                                 % (value_meta,))
        return ('%s value=%s,value_meta=%s %s'
                % (key, value, meta_field,
                   lp.format_time_ms(metric['timestamp'])), tenant_id)
