"""Verification: point counts per field, time unit, measurement and tenant.

Every unit of the planned range is counted in the source (``count(*)``:
one count per field) and in the tenant's database. A target may hold more
than the source (the persister writes there directly once ``db_per_tenant``
is on); fewer, for any field of any unit, is a mismatch, and the copy of
that unit is repeated (see :mod:`.cli`). Counting per field catches what a
copy can lose without an error (a field dropped for its type); counting per
unit bounds the work a repair repeats.

Counts at the edge of a tenant's retention are taken from a little inside
it, since InfluxDB drops what ages out between the copy and the count.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from typing import Optional

from monasca_persister_dbpt.influx.influxql import quote_ident, quote_literal
from monasca_persister_dbpt.migrate.plan import NS, Chunk, Planner
from monasca_persister_dbpt.placement import InvalidTenantId

LOG = logging.getLogger(__name__)

#: Seconds kept clear of a tenant's retention edge when counting.
RETENTION_MARGIN = 300


@dataclasses.dataclass
class Mismatch:
    measurement: str
    tenant_id: str
    database: str
    target_policy: str
    source: int
    target: int
    #: (unit start, field) that are short in the target.
    units: list = dataclasses.field(default_factory=list)


def missing_lines(report: 'Report') -> list[str]:
    """What verification found missing altogether, a line each."""
    lines = []
    for placement, policy in report.missing:
        if policy is None:
            lines.append('database %s of tenant %s is missing on server %s'
                         % (quote_ident(placement.database),
                            placement.tenant_id, placement.server.url))
        else:
            lines.append('policy %s of database %s is missing on server %s'
                         % (quote_ident(policy),
                            quote_ident(placement.database),
                            placement.server.url))
    return lines


@dataclasses.dataclass
class Report:
    checked: int = 0
    source_points: int = 0
    target_points: int = 0
    mismatches: list = dataclasses.field(default_factory=list)
    extra: list = dataclasses.field(default_factory=list)
    #: (Chunk.key, unit start) to copy again.
    repair: set = dataclasses.field(default_factory=set)
    #: (placement, policy or None) whose database (or that policy of it)
    #: is missing in a target: counted as empty, so its units are
    #: repaired like any short one.
    missing: list = dataclasses.field(default_factory=list)
    #: Pairs short only by points that reached the source after the copy
    #: counted them (a live system): not lost, left for the next pass.
    arrived: list = dataclasses.field(default_factory=list)
    arrived_points: int = 0


def _counts(rows, tag: Optional[str]) -> dict:
    """{(tenant, unit): {field: count}} from count(*) rows."""
    out: dict = {}
    for row in rows:
        counts = {k[len('count_'):]: v for k, v in row.items()
                  if k.startswith('count_') and v}
        if counts:
            out[(row.get(tag) if tag else None, row['time'])] = counts
    return out


def verify(planner: Planner, run_target, now_ns: Optional[int] = None,
           copied: Optional[dict] = None) -> Report:
    """Compare the source and the targets over the planned range.

    *run_target* is callable(placement, statement) -> results. Each source
    policy is compared with the target policy the planner sends it to
    (the migration: all to the default; a rebalance: each to its own).

    *copied* (the checkpoint right after a pass that copied every unit it
    planned: ``{Chunk.key: {unit: count}}``) tells the points a live
    source gained since they were counted from points a copy lost: a unit
    short by no more than its source grew since its copy is reported in
    ``arrived`` (the next pass copies it); one short by more, in
    ``mismatches``. A unit the checkpoint does not hold was empty when the
    pass planned (or the pass failed, and says so): all of it is new.
    Without *copied* every point short is a mismatch.
    """
    now_ns = now_ns if now_ns is not None else time.time_ns()
    unit = '1' + planner.unit
    # (measurement, tenant, target policy) -> {unit: Counter(field ->
    # count)}, summed over the source policies, and the policies that
    # contributed.
    want: dict = collections.defaultdict(
        lambda: collections.defaultdict(collections.Counter))
    policies_of: dict = collections.defaultdict(set)
    #: (measurement, tenant, target policy, unit) -> points the source
    #: gained in the unit since its copy (only with *copied*).
    grown: Optional[dict] = collections.defaultdict(int) \
        if copied is not None else None
    where: dict = {}

    def add(key, t, rp, fields, field, placement):
        want[key][t].update(fields)
        policies_of[key + (t,)].add(rp)
        if grown is not None:
            recorded = copied.get(Chunk(rp, key[0], '', key[1], 0, 0, 0,
                                        placement,
                                        origin=planner.origin).key, {})
            grown[key + (t,)] += fields.get(field, 0) - recorded.get(t, 0)
    measurements = planner.measurements()
    for rp in planner.policies():
        for measurement in measurements:
            field = planner.count_field(measurement, rp)
            tag = planner.tenant_tag(measurement, rp) if field else None
            if tag is None or field is None:
                continue
            span = planner._span(rp, measurement, field, planner.lower,
                                 planner.upper + 1)
            if span is None:
                continue
            source = planner.source_of(rp, measurement)
            rows = planner.rows(
                'SELECT count(*) FROM %s WHERE time >= %d AND time <= %d '
                'GROUP BY time(%s), %s fill(none)' % (
                    source, span[0], span[1], unit, quote_ident(tag)))
            counted = _counts(rows, tag)
            bounded: dict = {}
            for (tenant, _), _ in counted.items():
                if tenant in bounded or tenant in (None, ''):
                    continue
                try:
                    targets = planner.targets(tenant)
                except InvalidTenantId:
                    bounded[tenant] = None
                    continue
                bounded[tenant] = []
                for placement in targets:
                    if planner.accepts(tenant, placement) is not None:
                        continue
                    lower = _lower(planner, placement, rp, now_ns)
                    target_rp = planner.target_policy(placement, rp)
                    # Each replica is compared on its own.
                    key = (measurement, tenant, target_rp,
                           placement.server.url if placement.replicas
                           else '')
                    bounded[tenant].append((placement, lower, key))
                    seen = where.get(key)
                    both = span if seen is None else (
                        min(seen[2][0], span[0]), max(seen[2][1], span[1]))
                    lowest = lower if seen is None else min(seen[3], lower)
                    where[key] = (placement, tag, both, lowest)
                    if lower > span[0]:
                        # Count this tenant again from its retention edge.
                        again = _counts(planner.rows(
                            'SELECT count(*) FROM %s WHERE %s = %s AND time '
                            '>= %d AND time <= %d GROUP BY time(%s) '
                            'fill(none)' % (source, quote_ident(tag),
                                            quote_literal(tenant), lower,
                                            span[1], unit)), None)
                        for (_, t), fields in again.items():
                            add(key, t, rp, fields, field, placement)
            for (tenant, t), fields in counted.items():
                for info in bounded.get(tenant) or ():
                    if info[1] > span[0]:
                        continue
                    add(info[2], t, rp, fields, field, info[0])
    report = Report()
    by_db: dict = collections.defaultdict(list)
    for key, (placement, *_) in where.items():
        by_db[(placement.server, placement.database)].append(key)
    for (_, database), keys in by_db.items():
        placement = where[keys[0]][0]
        statements = []
        for key in keys:
            measurement, tenant, policy, _ = key
            _, tag, span, lower = where[key]
            statements.append(
                'SELECT count(*) FROM %s.%s.%s WHERE %s = %s AND time >= %d '
                'AND time <= %d GROUP BY time(%s) fill(none)' % (
                    quote_ident(database),
                    quote_ident(policy) if policy else '',
                    quote_ident(measurement), quote_ident(tag),
                    quote_literal(tenant), max(span[0], lower), span[1],
                    unit))
        for key, result in zip(keys, _target_counts(
                report, placement, statements, run_target)):
            got = _counts([dict(zip(s['columns'], v))
                           for s in result.get('series') or []
                           for v in s.get('values') or []], None)
            _compare(report, planner, placement, key, want[key],
                     {t: f for (_, t), f in got.items()}, policies_of,
                     grown)
    return report


def _target_counts(report: Report, placement, statements: list,
                   run_target) -> list[dict]:
    """One result per statement. InfluxDB stops a multi-statement request
    at the first statement that fails and answers only "not executed" for
    it: that one is asked alone for its real error. A missing database (or
    policy) is what is missing: counted as empty and reported."""
    out: list[dict] = []
    while len(out) < len(statements):
        results = run_target(placement, ';'.join(statements[len(out):]))
        if not results:
            raise RuntimeError('verifying %s: no answer' % placement.database)
        for result in results:
            if result.get('error') is None:
                out.append(result)
                continue
            alone = run_target(placement, statements[len(out)])
            result = alone[0] if alone else {'error': 'no answer'}
            error = result.get('error')
            if error is None:
                out.append(result)
            elif 'database not found' in error:
                report.missing.append((placement, None))
                return out + [{}] * (len(statements) - len(out))
            elif 'retention policy not found' in error:
                report.missing.append((placement,
                                       error.rsplit(':', 1)[-1].strip()))
                out.append({})
            else:
                raise RuntimeError('verifying %s on %s: %s' % (
                    placement.database, placement.server.url, error))
            break  # the statements after it were not run: ask again
    return out


def _lower(planner: Planner, placement, source_rp: str, now_ns: int) -> int:
    hours = planner.target_hours(placement, source_rp)
    if not hours:
        return planner.lower
    return max(planner.lower, now_ns - hours * 3600 * NS +
               RETENTION_MARGIN * NS)


def _compare(report, planner, placement, key, want, got,
             policies_of, grown) -> None:
    measurement, tenant, policy, _ = key
    source = sum(max(f.values()) for f in want.values())
    target = sum(max(got[t].values()) if t in got else 0 for t in want)
    short, arrived = [], 0
    for t, fields in sorted(want.items()):
        # What the source gained in this unit since it was copied (None:
        # not known, so every point short is missing).
        since = grown.get(key + (t,)) if grown is not None else None
        lacking = {field: n - got.get(t, {}).get(field, 0)
                   for field, n in fields.items()
                   if got.get(t, {}).get(field, 0) < n}
        if not lacking:
            continue
        if since is not None and max(lacking.values()) <= since:
            arrived += max(lacking.values())
        else:
            short.extend((t, field) for field in lacking)
    report.checked += 1
    report.source_points += source
    report.target_points += target
    entry = Mismatch(measurement, tenant, placement.database,
                     policy or '(default)', source, target, short)
    if arrived:
        report.arrived.append(dataclasses.replace(entry, units=[]))
        report.arrived_points += arrived
    if short:
        report.mismatches.append(entry)
        for t, _ in short:
            for rp in policies_of[key + (t,)]:
                report.repair.add((Chunk(rp, measurement, '', tenant, 0, 0,
                                         0, placement,
                                         origin=planner.origin).key, t))
    elif target > source:
        report.extra.append(entry)
