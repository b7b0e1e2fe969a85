"""Copying a chunk to another server: ``SELECT INTO`` cannot cross servers.

The chunk's points are read from the source in chunked JSON (epoch ns) and
written as line protocol to the tenant's server through the same writer,
error table and retry as the persister. Field types come from the source's
``SHOW FIELD KEYS``, since JSON cannot tell an integer field from a float.
"""

from __future__ import annotations

import json
import logging

from monasca_persister_dbpt.influx import line_protocol as lp
from monasca_persister_dbpt.influx.influxql import quote_ident, quote_literal
from monasca_persister_dbpt.influx.writer import InfluxWriter
from monasca_persister_dbpt.placement import Server

LOG = logging.getLogger(__name__)

LINES_PER_WRITE = 5000


def _string(value) -> str:
    # Line protocol string fields escape only backslash and quote.
    return '"%s"' % str(value).replace('\\', '\\\\').replace('"', '\\"')


def _field(value, kind: str) -> str:
    if kind == 'float':
        return repr(float(value))
    if kind == 'integer':
        return '%di' % int(value)
    if kind == 'boolean':
        return 'true' if value else 'false'
    return _string(value)


class Streamer:
    def __init__(self, writer: InfluxWriter, source_server: Server,
                 source: str) -> None:
        self.writer = writer
        self.source_server = source_server
        self.source = source
        self._types: dict = {}

    def _field_types(self, rp: str, measurement: str) -> dict:
        # Per policy: a tier keeps count as an integer where the raw
        # policy has no such field, and SHOW FIELD KEYS without a policy
        # answers for the default one only.
        types = self._types.get((rp, measurement))
        if types is None:
            result = self.writer.run(self.source_server,
                                     'SHOW FIELD KEYS ON %s FROM %s.%s' % (
                                         quote_ident(self.source),
                                         quote_ident(rp),
                                         quote_ident(measurement)))[0]
            types = {v[0]: v[1] for s in result.get('series', [])
                     for v in s.get('values') or []}
            self._types[(rp, measurement)] = types
        return types

    def copy(self, chunk) -> int:
        """Copy one chunk; returns the points written."""
        types = self._field_types(chunk.source_rp, chunk.measurement)
        statement = ('SELECT * FROM %s.%s.%s WHERE %s = %s AND time >= %d AND '
                     'time < %d GROUP BY *' % (
                         quote_ident(self.source),
                         quote_ident(chunk.source_rp),
                         quote_ident(chunk.measurement),
                         quote_ident(chunk.tenant_tag),
                         quote_literal(chunk.tenant_id), chunk.start,
                         chunk.end))
        session = self.writer.session(self.source_server)
        response = session.post(
            self.source_server.url + '/query', stream=True, timeout=600,
            data={'q': statement, 'epoch': 'ns', 'chunked': 'true',
                  'chunk_size': LINES_PER_WRITE})
        response.raise_for_status()
        measurement = lp.escape_measurement(chunk.measurement)
        lines, written = [], 0
        for raw in response.iter_lines():
            if not raw:
                continue
            for result in json.loads(raw).get('results', []):
                if 'error' in result:
                    raise RuntimeError('%s: %s' % (statement[:200],
                                                   result['error']))
                for series in result.get('series', []):
                    lines.extend(self._lines(measurement, series, types))
            if len(lines) >= LINES_PER_WRITE:
                self._write(chunk, lines)
                written += len(lines)
                lines = []
        if lines:
            self._write(chunk, lines)
            written += len(lines)
        return written

    def _write(self, chunk, lines) -> None:
        # Bounded, so that once a target server has run out of retries the
        # later chunks for it fail at once and the other servers' go on.
        self.writer.write(chunk.placement, lines, precision='ns',
                          retry_for=self.writer.retry_timeout,
                          policy=chunk.target_rp)

    @staticmethod
    def _lines(measurement: str, series: dict, types: dict) -> list:
        tags = ''.join(',%s=%s' % (lp.escape_name(k, 'tag key'),
                                   lp.escape_name(v, 'tag value'))
                       for k, v in sorted((series.get('tags') or {}).items())
                       if v)
        columns = series['columns']
        out = []
        for values in series.get('values') or []:
            fields = ','.join(
                '%s=%s' % (lp.escape_name(name, 'field key'),
                           _field(value, types.get(name, 'float')))
                for name, value in zip(columns[1:], values[1:])
                if value is not None)
            if fields:
                out.append('%s%s %s %d' % (measurement, tags, fields,
                                           values[0]))
        return out
