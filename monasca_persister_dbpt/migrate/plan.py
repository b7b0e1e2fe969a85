"""What to copy: (policy, measurement, tenant, time chunk), in absolute time.

The range is fixed once, at start (no window slides with ``now()`` during a
long run), and only the time units that hold data are planned: the source is
asked once per measurement for its point counts per unit and tenant, so a
ten-year range over a few weeks of data costs a few queries, not thousands.

Completeness is decided by the data, never by the checkpoint alone: every
run counts the source again, and a unit is skipped only when the checkpoint
says it was copied with exactly the count the source holds now. A unit that
gained points (late arrivals, the persister still writing), a unit an
earlier run left out (another range, a refused tenant) or one that was
never finished is copied (again: ``SELECT INTO`` is an idempotent upsert).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import re
import time
from typing import Collection, Iterable, Optional, Sequence

from monasca_persister_dbpt.influx.influxql import quote_ident, quote_literal
from monasca_persister_dbpt.influx.line_protocol import parse_series_key
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
    #: Field names and types of the measurement: only measurements whose
    #: types agree are copied by one statement (see jobs()).
    fields: tuple = ()
    #: (unit start, count) of the units this chunk covers, as counted at
    #: plan time; the checkpoint records them.
    units: tuple = ()
    #: The target database's policy that receives the points; None is its
    #: default policy (see Planner.target_policy).
    target_rp: Optional[str] = None
    #: The source server's URL when several sources share a checkpoint
    #: (a rebalance); empty for the migration.
    origin: str = ''

    @property
    def key(self) -> str:
        """Identity in the checkpoint (without the interval)."""
        parts = (self.source_rp, self.measurement, self.tenant_id,
                 self.placement.database)
        if self.placement.replicas:
            parts += (self.placement.server.url,)
        return '\x1f'.join(parts + (self.origin,) if self.origin else parts)


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

    @property
    def points(self) -> int:
        return sum(c.points for c in self.chunks)

    def placements(self) -> list[Placement]:
        seen = {}
        for c in self.chunks:
            seen.setdefault((c.placement.server, c.placement.database),
                            c.placement)
        return list(seen.values())


def jobs(chunks: Sequence[Chunk], max_points: int) -> list[list[Chunk]]:
    """Chunks of one tenant with the same bounds and the same field types,
    batched so that one multi-source ``SELECT ... INTO`` copies them (a
    statement costs a fixed few tens of milliseconds in influxd, whatever it
    copies). influxd gives a field name one type across all the sources of
    a statement, so measurements whose types differ are never batched: an
    integer would become a float, a string or boolean field would be lost.
    """
    groups: dict = {}
    for c in chunks:
        groups.setdefault((c.source_rp, c.tenant_tag, c.tenant_id,
                           c.placement.server, c.placement.database,
                           c.start, c.end, c.fields),
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


class Planner:
    """Asks the source what it holds and cuts it into chunks."""

    def __init__(self, run, placements: PlacementMap, source: str, *,
                 unit: str = 'w', start_offset: int = 0,
                 end_offset: int = 520,
                 skip: Iterable[re.Pattern] = (),
                 chunk_points: int = 1_000_000,
                 plan_time: Optional[int] = None, workers: int = 1) -> None:
        self.workers = workers
        #: Set by a rebalance: the source server's URL (see Chunk.origin).
        self.origin = ''
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

    def target_policy(self, placement: Placement,
                      source_rp: str) -> Optional[str]:
        """The policy of the tenant database that receives *source_rp*'s
        points; None is the database's default policy, the one the
        persister writes and monasca-api reads (the migration's shared
        source has no tiers: every policy of it goes there)."""
        return None

    def target_hours(self, placement: Placement,
                     source_rp: str) -> Optional[int]:
        """How long the receiving policy keeps points (None: for ever)."""
        return placement.retention.hours if placement.retention else None

    def accepts(self, tenant_id: str,
                placement: Optional[Placement] = None) -> Optional[str]:
        """Why points of *tenant_id* (placed at *placement*) in the source
        are not copied, or None: the migration copies every tenant the
        mapping accepts, except into the source itself."""
        if placement is not None and placement.database == self.source:
            return 'tenant %r maps to the source database itself' % tenant_id
        return None

    def lower_for(self, placement: Placement, source_rp: str = '') -> int:
        """Start of the range for a tenant: older points would only be
        dropped by its target policy."""
        hours = self.target_hours(placement, source_rp)
        if hours:
            return max(self.lower, self.plan_time - hours * 3600 * NS)
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

    def _from(self, measurement: str, rp: Optional[str]) -> str:
        # With a policy: SHOW ... without one answers for the default
        # policy only, and a tier may hold what the raw policy no longer
        # does.
        return '%s.%s' % (quote_ident(rp), quote_ident(measurement)) if rp \
            else quote_ident(measurement)

    def tenant_tag(self, measurement: str,
                   rp: Optional[str] = None) -> Optional[str]:
        keys = {r['tagKey'] for r in self.rows(
            'SHOW TAG KEYS ON %s FROM %s' % (quote_ident(self.source),
                                              self._from(measurement, rp)))}
        return next((t for t in TENANT_TAGS if t in keys), None)

    def field_types(self, measurement: str, rp: Optional[str] = None) -> tuple:
        """``((name, type), ...)`` of a measurement, sorted."""
        return tuple(sorted((r['fieldKey'], r['fieldType']) for r in self.rows(
            'SHOW FIELD KEYS ON %s FROM %s' % (quote_ident(self.source),
                                                self._from(measurement, rp)))))

    def count_field(self, measurement: str,
                    rp: Optional[str] = None) -> Optional[str]:
        fields = [name for name, _ in self.field_types(measurement, rp)]
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

    def build(self, done: dict[str, dict],
              force: Optional[set] = None) -> Plan:
        """The chunks still to copy.

        *done* maps Chunk.key to ``{unit start: count}`` as the checkpoint
        recorded them; a unit is left out only when its count now is the
        recorded one. *force* is a set of ``(key, unit start)`` to copy
        whatever the checkpoint says (what a verification found missing).
        """
        plan = Plan(self.source, self.plan_time, self.lower, self.upper)
        measurements = self.measurements()
        work = [(rp, m) for rp in self.policies() for m in measurements]

        def one(item):
            part = Plan(self.source, self.plan_time, self.lower, self.upper)
            self._plan_measurement(part, item[0], item[1], done,
                                   force or set())
            return part
        # The count queries dominate planning; influxd runs them in parallel.
        with concurrent.futures.ThreadPoolExecutor(self.workers) as pool:
            for part in pool.map(one, work):
                plan.chunks.extend(part.chunks)
                plan.untagged.extend(part.untagged)
                for tenant, reason in part.refused_tenants.items():
                    plan.refused_tenants.setdefault(tenant, reason)
        return plan

    def unit_counts(self, rp: str, measurement: str, field: str,
                    tenant_tag: str) -> tuple[dict, Optional[tuple]]:
        """{tenant: [(unit start, count), ...]} over the whole range, and
        the span of the points counted."""
        units: dict = {}
        span = self._span(rp, measurement, field, self.lower, self.upper + 1)
        if span is not None:
            self.counts(rp, measurement, field, tenant_tag, span[0], span[1],
                        units)
        return units, span

    def series_of(self, tenant_id: str, tenant_tags: Iterable[str],
                  measurements: Collection[str]) -> set[str]:
        """Series keys of a tenant in the source's *measurements*: what its
        database will hold. (Counted from the keys: influxd 1.6 counts a
        series once per shard in SHOW SERIES CARDINALITY.)"""
        keys = set()
        for tag in sorted(set(tenant_tags)):
            for row in self.rows('SHOW SERIES ON %s WHERE %s = %s' % (
                    quote_ident(self.source), quote_ident(tag),
                    quote_literal(tenant_id))):
                if parse_series_key(row['key'])[0] in measurements:
                    keys.add(row['key'])
        return keys

    def _tenants(self, measurement: str, tenant_tag: str) -> list[str]:
        """Tenant ids of a measurement, from the index alone (cheap)."""
        return [r['value'] for r in self.rows(
            'SHOW TAG VALUES ON %s FROM %s WITH KEY = %s' % (
                quote_ident(self.source), quote_ident(measurement),
                quote_ident(tenant_tag)))]

    def _plan_measurement(self, plan, rp, measurement, done, force) -> None:
        fields = self.field_types(measurement, rp)
        if not fields:
            return  # nothing of it in this policy
        tenant_tag = self.tenant_tag(measurement, rp)
        if tenant_tag is None:
            plan.untagged.append(measurement)
            LOG.warning('measurement %r has no _tenant_id or tenant_id tag: '
                        'left in place', measurement)
            return
        field = next((n for n, _ in fields if n == 'value'),
                     fields[0][0] if fields else None)
        if field is None:
            return
        units, span = self.unit_counts(rp, measurement, field, tenant_tag)
        for tenant, tenant_units in units.items():
            if tenant is None or tenant == '':
                plan.untagged.append(measurement)
                continue
            try:
                targets = self.targets(tenant)
            except InvalidTenantId as exc:
                plan.refused_tenants.setdefault(tenant, str(exc))
                continue
            for placement in targets:
                self._plan_tenant(plan, rp, measurement, done, force,
                                  tenant, tenant_tag, tenant_units, span,
                                  placement, field, fields)

    def targets(self, tenant_id: str) -> tuple:
        """Where *tenant_id*'s points are copied: each of its replicas."""
        return self.placements.place(tenant_id).copies

    def _plan_tenant(self, plan, rp, measurement, done, force, tenant,
                     tenant_tag, tenant_units, span, placement, field,
                     fields) -> None:
        refused = self.accepts(tenant, placement)
        if refused is not None:
            plan.refused_tenants.setdefault(tenant, refused)
            return
        proto = Chunk(rp, measurement, tenant_tag, tenant, 0, 0, 0,
                      placement, fields,
                      target_rp=self.target_policy(placement, rp),
                      origin=self.origin)
        recorded = done.get(proto.key, {})
        lower = self.lower_for(placement, rp)
        if lower > span[0]:
            # Older points would only be dropped by the tenant's
            # policy: count from where its copy starts.
            again: dict = {}
            self.counts(rp, measurement, field, tenant_tag, lower,
                        max(lower, span[1]), again,
                        (tenant_tag, tenant))
            tenant_units = again.get(tenant, [])
        units_in_range = [(t, n, recorded.get(t) == n and
                           (proto.key, t) not in force)
                          for t, n in sorted(tenant_units)
                          if t + self.unit_ns > lower]
        plan.chunks.extend(self._cut(proto, units_in_range, lower,
                                     self.upper + 1))

    def _cut(self, proto: Chunk, units, start: int, end: int) -> list[Chunk]:
        """Chunks that tile [start, end) except the units already done.

        *units* are ``(unit start, count, done)``, sorted, for the units
        holding data. A chunk holds at most ``chunk_points`` counted points
        (a unit is never split) and also covers the empty units around it,
        so points stamped there after the count are copied too.
        """
        chunks = []
        current: list = []
        c_start = start

        def close(c_end):
            if current:
                chunks.append(dataclasses.replace(
                    proto, start=c_start, end=c_end,
                    points=sum(n for _, n in current), units=tuple(current)))
        for t, n, done in units:
            if done:
                close(max(t, start))
                current = []
                c_start = t + self.unit_ns
                continue
            if current and sum(c for _, c in current) + n > self.chunk_points:
                close(t)
                current = []
                c_start = t
            current.append((t, n))
        close(end)
        return chunks
