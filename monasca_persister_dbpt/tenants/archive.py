"""A tenant's points as a file: gzip line protocol, and back.

The file is what ``influx_inspect export`` writes (``# DML`` and
``# CONTEXT-DATABASE/RETENTION-POLICY`` lines, nanosecond timestamps,
``i`` on integers, quoted strings), so ``influx -import -compressed``
reads it too, with our own comment lines around it: a first line saying
whose export it is, one line per policy (name, duration, default), and a
last line with the points per policy, measurement and field. Without that
last line the file is truncated, and nothing of it is imported.

Export streams each policy and measurement (chunked JSON in, gzip out), so
memory stays bounded whatever the tenant's size. Import reads the file
twice: once to check it whole, then to write it through the package's
writer to the tenant's placement (every replica) and count it back.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from typing import IO, Iterator

from monasca_persister_dbpt.influx import influxql
from monasca_persister_dbpt.influx.influxql import quote_ident
from monasca_persister_dbpt.influx.schema import duration_hours
from monasca_persister_dbpt.influx.writer import InfluxWriter
from monasca_persister_dbpt.migrate.plan import MAX_NS, MIN_NS
from monasca_persister_dbpt.migrate.stream import field_types, stream_lines
from monasca_persister_dbpt.placement import Placement, RetentionPolicy
from monasca_persister_dbpt.tenants.inventory import Copy, Inventory

MAGIC = '# monasca-persister-dbpt export'
VERSION = 1
_POLICY = '# policy '
_END = '# end '
LINES_PER_WRITE = 5000


class ArchiveError(ValueError):
    """A file that is not a whole export of ours; the message says why."""


class Export:
    """Writes one tenant's points, every policy, to a gzip file."""

    def __init__(self, inventory: Inventory, copy: Copy, tenant_id: str,
                 start: int = MIN_NS, end: int = MAX_NS) -> None:
        self.inventory = inventory
        self.writer = inventory.writer
        self.copy = copy
        self.tenant_id = tenant_id
        self.start, self.end = start, end
        #: (policy, measurement) -> {field: points}
        self.counts: dict = {}

    @property
    def points(self) -> int:
        return sum(max(c.values()) for c in self.counts.values() if c)

    def write(self, path: str) -> int:
        """Export to *path* (written aside, renamed when whole); returns
        the points exported."""
        temporary = '%s.partial' % path
        measurements = self.inventory.measurements(self.copy)
        with gzip.open(temporary, 'wt', encoding='utf-8',
                       newline='\n') as out:
            out.write('%s %d %s\n' % (MAGIC, VERSION, json.dumps({
                'tenant': self.tenant_id, 'database': self.copy.database,
                'server': self.copy.server.url, 'start': self.start,
                'end': self.end}, sort_keys=True)))
            for policy in self.copy.policies:
                out.write('%s%s\n' % (_POLICY, json.dumps({
                    'name': policy.name, 'duration': policy.duration,
                    'default': policy.default}, sort_keys=True)))
            out.write('# DML\n# CONTEXT-DATABASE:%s\n' % self.copy.database)
            for policy in self.copy.policies:
                out.write('# CONTEXT-RETENTION-POLICY:%s\n' % policy.name)
                for measurement in measurements:
                    self._measurement(out, policy.name, measurement)
            out.write('%s%s\n' % (_END, json.dumps({
                'points': self.points, 'counts': [
                    [rp, m, fields] for (rp, m), fields in
                    sorted(self.counts.items())]}, sort_keys=True)))
        os.replace(temporary, path)
        return self.points

    def _measurement(self, out: IO, rp: str, measurement: str) -> None:
        types = field_types(self.writer, self.copy.server, self.copy.database,
                            rp, measurement)
        if not types:
            return
        statement = 'SELECT * FROM %s.%s.%s WHERE time >= %d AND time <= ' \
            '%d GROUP BY *' % (quote_ident(self.copy.database),
                               quote_ident(rp), quote_ident(measurement),
                               self.start, self.end)
        counts = self.counts.setdefault((rp, measurement), {})
        for lines in stream_lines(self.writer, self.copy.server, statement,
                                  measurement, types, counts=counts):
            out.write('\n'.join(lines))
            out.write('\n')




class Archive:
    """An export file, checked whole before anything is read from it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.header: dict = {}
        self.policies: list = []
        self.end: dict = {}
        self.check()

    def _open(self) -> IO:
        return gzip.open(self.path, 'rt', encoding='utf-8', newline='\n')

    def check(self) -> None:
        lines = 0
        try:
            with self._open() as handle:
                first = handle.readline()
                if not first.startswith(MAGIC + ' '):
                    raise ArchiveError(
                        '%s is not an export of monasca-persister-dbpt (its '
                        'first line is %r)' % (self.path, first[:80]))
                version, _, header = first[len(MAGIC) + 1:].partition(' ')
                if version != str(VERSION):
                    raise ArchiveError('%s is an export of version %s; this '
                                       'release reads version %d'
                                       % (self.path, version, VERSION))
                self.header = json.loads(header)
                for line in handle:
                    if self.end:
                        raise ArchiveError('%s has lines after its end line'
                                           % self.path)
                    if line.startswith(_POLICY):
                        self.policies.append(json.loads(line[len(_POLICY):]))
                    elif line.startswith(_END):
                        self.end = json.loads(line[len(_END):])
                    elif line.strip() and not line.startswith('#'):
                        lines += 1
        except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
            raise ArchiveError('%s cannot be read whole (truncated or not '
                               'gzip?): %s' % (self.path, exc)) from None
        except ArchiveError:
            raise
        except (ValueError, TypeError) as exc:
            raise ArchiveError('%s has a header we did not write: %s'
                               % (self.path, exc)) from None
        if not self.end:
            raise ArchiveError('%s is truncated: it has no end line (the '
                               'export did not finish)' % self.path)
        if lines != self.end.get('points'):
            raise ArchiveError('%s holds %d point(s) but its end line says '
                               '%s' % (self.path, lines,
                                       self.end.get('points')))

    @property
    def tenant_id(self) -> str:
        return self.header['tenant']

    @property
    def points(self) -> int:
        return self.end['points']

    def sections(self, batch: int = LINES_PER_WRITE) -> Iterator[tuple]:
        """(policy, lines) in batches of at most *batch* lines."""
        policy, lines = None, []
        with self._open() as handle:
            for line in handle:
                if line.startswith('# CONTEXT-RETENTION-POLICY:'):
                    if lines:
                        yield policy, lines
                    policy, lines = line.split(':', 1)[1].strip(), []
                elif line.startswith('#') or not line.strip():
                    continue
                else:
                    lines.append(line.rstrip('\n'))
                    if len(lines) >= batch:
                        yield policy, lines
                        lines = []
        if lines:
            yield policy, lines


class Import:
    """Writes an archive back to its tenant's placement, every replica."""

    def __init__(self, archive: Archive, placement: Placement,
                 writer: InfluxWriter) -> None:
        self.archive = archive
        self.placement = placement
        self.writer = writer
        raw = placement.retention.name if placement.retention else 'autogen'
        tiers = {t.policy.name for t in placement.tiers}
        #: A file policy -> the policy it goes to: the default to the
        #: tenant's raw policy, any other (a tier, a policy the placement
        #: does not know) to a policy of its own name.
        self.policy_map = {p['name']: raw if p['default'] else p['name']
                           for p in archive.policies}
        #: The file's policies the placement does not know: made with
        #: their own duration where missing.
        self.kept = [p for p in archive.policies if not p['default'] and
                     p['name'] not in tiers and p['name'] != raw]

    def run(self) -> None:
        copies = self.placement.copies
        self.writer.ensure(copies, retry_for=self.writer.retry_timeout)
        for copy in copies:
            for policy in self.kept:
                hours = duration_hours(policy['duration'])
                rp = RetentionPolicy(policy['name'], None if hours is None
                                     else max(1, int(hours)))
                result = self.writer.run(copy.server, influxql.create_policy(
                    copy.database, rp))[0]
                if 'error' in result and \
                        'already exists' not in result['error']:
                    raise ArchiveError('policy %s on %s: %s' % (
                        policy['name'], copy.server.url, result['error']))
        for policy, lines in self.archive.sections():
            target = self.policy_map.get(policy, policy)
            for copy in copies:
                self.writer.write(copy, lines, precision='ns',
                                  retry_for=self.writer.retry_timeout,
                                  policy=target)

    def verify(self) -> list:
        """What is short: one line per copy, policy, measurement and
        field whose count is below the file's (empty: every point is
        there)."""
        start = self.archive.header.get('start', MIN_NS)
        end = self.archive.header.get('end', MAX_NS)
        short = []
        for copy in self.placement.copies:
            for rp, measurement, fields in self.archive.end['counts']:
                target = self.policy_map.get(rp, rp)
                result = self.writer.run(copy.server, (
                    'SELECT count(*) FROM %s.%s.%s WHERE time >= %d AND '
                    'time <= %d' % (quote_ident(copy.database),
                                    quote_ident(target),
                                    quote_ident(measurement), start, end)))[0]
                have = {}
                for series in result.get('series') or ():
                    for values in series.get('values') or ():
                        have = {c[len('count_'):]: v for c, v in
                                zip(series['columns'][1:], values[1:])}
                for field, count in sorted(fields.items()):
                    if (have.get(field) or 0) < count:
                        short.append(
                            '%s %s.%s field %s: %d of %d point(s)' % (
                                copy.server.url, target, measurement, field,
                                have.get(field) or 0, count))
        return short
