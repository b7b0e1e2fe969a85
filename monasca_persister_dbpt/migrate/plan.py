"""What to copy: (policy, measurement, tenant, time chunk), in absolute time.

The range is fixed once, at start (no window slides with ``now()`` during a
long run), and only the time units that hold data are planned: the source is
asked once per measurement for its point counts per unit and tenant, so a
ten-year range over a few weeks of data costs a few queries, not thousands.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import re
import time
from typing import Iterable, Optional, Sequence

from monasca_persister_dbpt.influx.influxql import quote_ident, quote_literal
from monasca_persister_dbpt.placement import InvalidTenantId, Placement
from monasca_persister_dbpt.placement import PlacementMap

LOG = logging.getLogger(__name__)

NS = 1_000_000_000
UNIT_NS = {'h': 3600 * NS, 'd': 86400 * NS, 'w': 7 * 86400 * NS}
#: Largest and smallest timestamps InfluxDB stores (ns).
MAX_NS = 9223372036854775806
MIN_NS = -9223372036854775806
#: Measurements whose tenant tag is ``tenant_id`` (upstream's alarm history).
TENANT_TAGS = ('_tenant_id', 'tenant_id')


@dataclasses.dataclass(frozen=True)
class Chunk:
    source_rp: str
    measurement: str
    tenant_tag: str
    tenant_id: str
    start: int          # ns, inclusive
    end: int            # ns, exclusive
    points: int         # as counted at plan time
    placement: Placement

    @property
    def key(self) -> str:
        """Identity in the checkpoint (without the interval)."""
        return '\x1f'.join((self.source_rp, self.measurement, self.tenant_id,
                            self.placement.database))


@dataclasses.dataclass
class Plan:
    source: str
    plan_time: int      # ns: the "now" every bound was computed from
    lower: int
    upper: int
    chunks: list = dataclasses.field(default_factory=list)
    skipped_measurements: list = dataclasses.field(default_factory=list)
    refused_tenants: dict = dataclasses.field(default_factory=dict)
    untagged: list = dataclasses.field(default_factory=list)
    #: Every (policy, measurement) looked at.
    scopes: set = dataclasses.field(default_factory=set)

    @property
    def points(self) -> int:
        return sum(c.points for c in self.chunks)

    def placements(self) -> list[Placement]:
        seen = {}
        for c in self.chunks:
            seen.setdefault(c.placement.database, c.placement)
        return list(seen.values())


def jobs(chunks: Sequence[Chunk], max_points: int) -> list[list[Chunk]]:
    """Chunks of one tenant with the same bounds, batched so that one
    multi-source ``SELECT ... INTO`` copies them (a statement costs a fixed
    few tens of milliseconds in influxd, whatever it copies)."""
    groups: dict = {}
    for c in chunks:
        groups.setdefault((c.source_rp, c.tenant_tag, c.tenant_id,
                           c.placement.database, c.start, c.end),
                          []).append(c)
    out = []
    for group in groups.values():
        job, points = [], 0
        for c in group:
            if job and points + c.points > max_points:
                out.append(job)
                job, points = [], 0
            job.append(c)
            points += c.points
        out.append(job)
    return out


def measurement_key(source: str, rp: str, measurement: str) -> str:
    """Checkpoint identity of "every tenant of this measurement"."""
    return '\x1f'.join((rp, measurement, '*', source))


def subtract(start: int, end: int,
             done: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """[start, end) minus the finished intervals (sorted, merged or not)."""
    remaining = [(start, end)]
    for d_start, d_end in sorted(done):
        nxt = []
        for r_start, r_end in remaining:
            if d_end <= r_start or d_start >= r_end:
                nxt.append((r_start, r_end))
                continue
            if r_start < d_start:
                nxt.append((r_start, d_start))
            if d_end < r_end:
                nxt.append((d_end, r_end))
        remaining = nxt
    return remaining


class Planner:
    """Asks the source what it holds and cuts it into chunks."""

    def __init__(self, run, placements: PlacementMap, source: str, *,
                 unit: str = 'w', start_offset: int = 0,
                 end_offset: int = 520,
                 skip: Iterable[re.Pattern] = (),
                 chunk_points: int = 1_000_000,
                 plan_time: Optional[int] = None, workers: int = 1) -> None:
        self.workers = workers
        self._run = run            # callable(statement) -> results
        self.placements = placements
        self.source = source
        self.unit = unit
        self.unit_ns = UNIT_NS[unit]
        self.skip = list(skip)
        self.chunk_points = chunk_points
        self.plan_time = plan_time if plan_time is not None else \
            time.time_ns()
        # Upstream's window is (now - end, now - start]; an open start (0)
        # also takes the points stamped in the future.
        self.lower = self.plan_time - end_offset * self.unit_ns
        self.upper = MAX_NS if start_offset == 0 else \
            self.plan_time - start_offset * self.unit_ns

    def _query(self, statement: str) -> list:
        results = self._run(statement)
        for result in results:
            if 'error' in result:
                raise RuntimeError('%s: %s' % (statement[:200],
                                               result['error']))
        return results

    def rows(self, statement: str) -> list[dict]:
        rows = []
        for result in self._query(statement):
            for series in result.get('series', []):
                for values in series.get('values') or []:
                    row = dict(zip(series['columns'], values))
                    row.update(series.get('tags') or {})
                    rows.append(row)
        return rows

    def source_of(self, rp: str, measurement: str) -> str:
        return '%s.%s.%s' % (quote_ident(self.source), quote_ident(rp),
                             quote_ident(measurement))

    def lower_for(self, placement: Placement) -> int:
        """Start of the range for a tenant: older points would only be
        dropped by its target policy."""
        if placement.retention and placement.retention.hours:
            return max(self.lower, self.plan_time -
                       placement.retention.hours * 3600 * NS)
        return self.lower

    def policies(self) -> list[str]:
        return [r['name'] for r in self.rows(
            'SHOW RETENTION POLICIES ON %s' % quote_ident(self.source))]

    def measurements(self) -> list[str]:
        names = [r['name'] for r in self.rows(
            'SHOW MEASUREMENTS ON %s' % quote_ident(self.source))]
        kept = []
        for name in names:
            if any(p.match(name) for p in self.skip):
                LOG.info('skipping measurement %r: matches --migrate-skip-'
                         'regex', name)
            else:
                kept.append(name)
        return kept

    def tenant_tag(self, measurement: str) -> Optional[str]:
        keys = {r['tagKey'] for r in self.rows(
            'SHOW TAG KEYS ON %s FROM %s' % (quote_ident(self.source),
                                              quote_ident(measurement)))}
        return next((t for t in TENANT_TAGS if t in keys), None)

    def count_field(self, measurement: str) -> Optional[str]:
        fields = [r['fieldKey'] for r in self.rows(
            'SHOW FIELD KEYS ON %s FROM %s' % (quote_ident(self.source),
                                                quote_ident(measurement)))]
        if 'value' in fields:
            return 'value'
        return fields[0] if fields else None

    @staticmethod
    def _only(tenant) -> str:
        return '%s = %s AND ' % (quote_ident(tenant[0]),
                                 quote_literal(tenant[1])) if tenant else ''

    def _span(self, rp, measurement, field, lower, upper, tenant=None):
        """First and last point time of the measurement in [lower, upper)."""
        where = 'WHERE %stime >= %d AND time < %d' % (self._only(tenant),
                                                      lower, upper)
        found = []
        for fn in ('first', 'last'):
            rows = self.rows('SELECT %s(%s) FROM %s %s' % (
                fn, quote_ident(field), self.source_of(rp, measurement), where))
            if not rows:
                return None
            found.append(rows[0]['time'])
        return found[0], found[1]

    def counts(self, rp, measurement, field, tenant_tag, first, last, out,
               tenant=None):
        """Add {tenant: [(unit_start, count), ...]} for the units with data
        between *first* and *last* (inclusive) to *out*."""
        q = ('SELECT count(%s) FROM %s WHERE %stime >= %d AND time <= %d '
             'GROUP BY time(1%s), %s fill(none)' % (
                 quote_ident(field), self.source_of(rp, measurement),
                 self._only(tenant), first, last, self.unit,
                 quote_ident(tenant_tag)))
        for row in self.rows(q):
            tenant = row.get(tenant_tag)
            if row['count']:
                out.setdefault(tenant, []).append((row['time'],
                                                   row['count']))

    def build(self, done: dict[str, list]) -> Plan:
        """The chunks still to copy, given the checkpoint's finished intervals.

        *done* maps Chunk.key to finished ``(start, end)`` intervals.
        """
        plan = Plan(self.source, self.plan_time, self.lower, self.upper)
        measurements = self.measurements()
        work = [(rp, m) for rp in self.policies() for m in measurements]

        def one(item):
            part = Plan(self.source, self.plan_time, self.lower, self.upper)
            self._plan_measurement(part, item[0], item[1], done)
            return part
        # The count queries dominate planning; influxd runs them in parallel.
        with concurrent.futures.ThreadPoolExecutor(self.workers) as pool:
            for part in pool.map(one, work):
                plan.chunks.extend(part.chunks)
                plan.untagged.extend(part.untagged)
                plan.scopes |= part.scopes
                for tenant, reason in part.refused_tenants.items():
                    plan.refused_tenants.setdefault(tenant, reason)
        return plan

    def _tenants(self, measurement: str, tenant_tag: str) -> list[str]:
        """Tenant ids of a measurement, from the index alone (cheap)."""
        return [r['value'] for r in self.rows(
            'SHOW TAG VALUES ON %s FROM %s WITH KEY = %s' % (
                quote_ident(self.source), quote_ident(measurement),
                quote_ident(tenant_tag)))]

    def _plan_measurement(self, plan, rp, measurement, done) -> None:
        scope = measurement_key(self.source, rp, measurement)
        plan.scopes.add(scope)
        tenant_tag = self.tenant_tag(measurement)
        if tenant_tag is None:
            plan.untagged.append(measurement)
            LOG.warning('measurement %r has no _tenant_id or tenant_id tag: '
                        'left in place', measurement)
            return
        field = self.count_field(measurement)
        if field is None:
            return
        # What an earlier run finished for every tenant of this measurement
        # is not counted again (delta runs are cheap)...
        units: dict[str, list] = {}
        scope_done = done.get(scope, [])
        for lower, upper in subtract(self.lower, self.upper + 1, scope_done):
            span = self._span(rp, measurement, field, lower, upper)
            if span is not None:
                self.counts(rp, measurement, field, tenant_tag, span[0],
                            span[1], units)
        # ... except for tenants that run did not copy (refused then, or
        # absent): the index says who they are; they are counted alone.
        for tenant in self._tenants(measurement, tenant_tag):
            try:
                placement = self.placements.place(tenant)
            except InvalidTenantId as exc:
                plan.refused_tenants.setdefault(tenant, str(exc))
                units.pop(tenant, None)
                continue
            key = Chunk(rp, measurement, tenant_tag, tenant, 0, 0, 0,
                        placement).key
            if scope_done and not done.get(key):
                for lower, upper in scope_done:
                    span = self._span(rp, measurement, field, lower, upper,
                                      (tenant_tag, tenant))
                    if span is not None:
                        self.counts(rp, measurement, field, tenant_tag,
                                    span[0], span[1], units,
                                    (tenant_tag, tenant))
        for tenant, tenant_units in units.items():
            if tenant is None or tenant == '':
                plan.untagged.append(measurement)
                continue
            if tenant in plan.refused_tenants:
                continue
            try:
                placement = self.placements.place(tenant)
            except InvalidTenantId as exc:
                plan.refused_tenants.setdefault(tenant, str(exc))
                continue
            if placement.database == self.source:
                plan.refused_tenants.setdefault(
                    tenant, 'tenant %r maps to the source database itself'
                    % tenant)
                continue
            lower = self.lower_for(placement)
            proto = Chunk(rp, measurement, tenant_tag, tenant, 0, 0, 0,
                          placement)
            finished = done.get(proto.key, [])
            for r_start, r_end in subtract(lower, self.upper + 1, finished):
                plan.chunks.extend(self._cut(proto, sorted(tenant_units),
                                             r_start, r_end))

    def _cut(self, proto: Chunk, units, start: int, end: int) -> list[Chunk]:
        """Chunks within [start, end) over the units holding data, each of
        at most ``chunk_points`` points (a unit is never split)."""
        chunks = []
        c_start = c_end = None
        c_points = 0
        for t, n in units:
            u_start, u_end = max(t, start), min(t + self.unit_ns, end)
            if u_start >= u_end:
                continue
            if c_start is not None and c_points + n > self.chunk_points:
                chunks.append(dataclasses.replace(
                    proto, start=c_start, end=c_end, points=c_points))
                c_start = None
            if c_start is None:
                # The first chunk starts where the range starts, so that a
                # tenant's measurements share their bounds and are copied
                # together (see jobs()).
                c_start, c_points = (start if not chunks else u_start), 0
            c_end = u_end
            c_points += n
        if c_start is not None:
            # The last chunk runs to the end of the range, so that points
            # stamped after the count was taken are copied too.
            chunks.append(dataclasses.replace(
                proto, start=c_start, end=end if end > c_end else c_end,
                points=c_points))
        return chunks
