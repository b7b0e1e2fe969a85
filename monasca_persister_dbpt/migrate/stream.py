"""Copying a chunk to another server: ``SELECT INTO`` cannot cross servers.

The chunk's points are read from the source in chunked JSON (epoch ns) and
written as line protocol to the tenant's server through the same writer,
error table and retry as the persister. Field types come from the source's
``SHOW FIELD KEYS``, since JSON cannot tell an integer field from a float.
"""

from __future__ import annotations

import json
import logging
from typing import Iterator, Optional

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


def stream_lines(writer: InfluxWriter, server: Server, statement: str,
                 measurement: str, types: dict,
                 batch: int = LINES_PER_WRITE,
                 counts: Optional[dict] = None) -> Iterator[list]:
    """Run a ``SELECT * ... GROUP BY *`` of *measurement* on *server* and
    yield its points as line protocol (ns), about *batch* lines at a time:
    the answer is streamed (chunked JSON), so memory stays bounded. With
    *counts*, the values of each field are counted into it."""
    response = writer.session(server).post(
        server.url + '/query', stream=True, timeout=600,
        data={'q': statement, 'epoch': 'ns', 'chunked': 'true',
              'chunk_size': batch})
    response.raise_for_status()
    escaped = lp.escape_measurement(measurement)
    lines: list = []
    for raw in response.iter_lines():
        if not raw:
            continue
        for result in json.loads(raw).get('results', []):
            if 'error' in result:
                raise RuntimeError('%s: %s' % (statement[:200],
                                               result['error']))
            for series in result.get('series', []):
                lines.extend(series_lines(escaped, series, types, counts))
        if len(lines) >= batch:
            yield lines
            lines = []
    if lines:
        yield lines


def series_lines(measurement: str, series: dict, types: dict,
                 counts: Optional[dict] = None) -> list:
    """One series of a JSON answer as line protocol; *types* (field ->
    InfluxDB type) keeps integers, strings and booleans exact."""
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
            out.append('%s%s %s %d' % (measurement, tags, fields, values[0]))
    if counts is not None:
        for index, name in enumerate(columns[1:], 1):
            present = sum(1 for values in series.get('values') or []
                          if values[index] is not None)
            if present:
                counts[name] = counts.get(name, 0) + present
    return out


def field_types(writer: InfluxWriter, server: Server, database: str,
                rp: str, measurement: str) -> dict:
    """field -> InfluxDB type in one policy (JSON cannot tell an integer
    from a float; SHOW FIELD KEYS without a policy answers for the
    default one only)."""
    result = writer.run(server, 'SHOW FIELD KEYS ON %s FROM %s.%s' % (
        quote_ident(database), quote_ident(rp), quote_ident(measurement)))[0]
    return {v[0]: v[1] for s in result.get('series', [])
            for v in s.get('values') or []}


class Streamer:
    def __init__(self, writer: InfluxWriter, source_server: Server,
                 source: str) -> None:
        self.writer = writer
        self.source_server = source_server
        self.source = source
        self._types: dict = {}

    def _field_types(self, rp: str, measurement: str) -> dict:
        # Per policy: a tier keeps count as an integer where the raw
        # policy has no such field.
        types = self._types.get((rp, measurement))
        if types is None:
            types = self._types[(rp, measurement)] = field_types(
                self.writer, self.source_server, self.source, rp,
                measurement)
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
        written = 0
        for lines in stream_lines(self.writer, self.source_server, statement,
                                  chunk.measurement, types):
            self._write(chunk, lines)
            written += len(lines)
        return written

    def _write(self, chunk, lines) -> None:
        # Bounded, so that once a target server has run out of retries the
        # later chunks for it fail at once and the other servers' go on.
        self.writer.write(chunk.placement, lines, precision='ns',
                          retry_for=self.writer.retry_timeout,
                          policy=chunk.target_rp)
