"""Verification: point counts per measurement and tenant, source vs target.

A target may hold more than the source (the persister writes there directly
once ``db_per_tenant`` is on); fewer is a mismatch.
"""

from __future__ import annotations

import collections
import dataclasses
import logging

from monasca_persister_dbpt.influx.influxql import quote_ident, quote_literal
from monasca_persister_dbpt.migrate.plan import Planner
from monasca_persister_dbpt.placement import InvalidTenantId

LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class Mismatch:
    measurement: str
    tenant_id: str
    database: str
    target_policy: str
    source: int
    target: int


@dataclasses.dataclass
class Report:
    checked: int = 0
    source_points: int = 0
    target_points: int = 0
    mismatches: list = dataclasses.field(default_factory=list)
    extra: list = dataclasses.field(default_factory=list)


def verify(planner: Planner, run_target) -> Report:
    """Count every (measurement, tenant) in the planned range on both sides.

    *run_target* is callable(placement, statement) -> results.
    """
    upper = min(planner.upper, planner.plan_time)
    # (measurement, tenant, target policy) -> source count, summed over the
    # source policies that map to it.
    want: dict = collections.Counter()
    where_of: dict = {}
    measurements = planner.measurements()
    for rp in planner.policies():
        for measurement in measurements:
            tag = planner.tenant_tag(measurement)
            field = planner.count_field(measurement)
            if tag is None or field is None:
                continue
            rows = planner.rows(
                'SELECT count(%s) FROM %s WHERE time >= %d AND time <= %d '
                'GROUP BY %s' % (quote_ident(field),
                                 planner.source_of(rp, measurement),
                                 planner.lower, upper, quote_ident(tag)))
            for row in rows:
                tenant = row.get(tag)
                try:
                    placement = planner.placements.place(tenant)
                except InvalidTenantId:
                    continue
                lower = planner.lower_for(placement)
                count = row['count']
                if lower != planner.lower:
                    counted = planner.rows(
                        'SELECT count(%s) FROM %s WHERE %s = %s AND time >= '
                        '%d AND time <= %d' % (
                            quote_ident(field), planner.source_of(rp, measurement),
                            quote_ident(tag), quote_literal(tenant), lower,
                            upper))
                    count = counted[0]['count'] if counted else 0
                policy = planner.placements.target_policy(tenant, rp)
                key = (measurement, tenant, policy or '')
                want[key] += count
                where_of[key] = (placement, field, tag, lower)
    report = Report()
    by_db = collections.defaultdict(list)
    for key, (placement, field, tag, lower) in where_of.items():
        by_db[placement.database].append((key, placement, field, tag, lower))
    for database, items in by_db.items():
        statements = []
        for (measurement, tenant, policy), _, field, tag, lower in items:
            statements.append(
                'SELECT count(%s) FROM %s.%s.%s WHERE %s = %s AND time >= %d '
                'AND time <= %d' % (
                    quote_ident(field), quote_ident(database),
                    quote_ident(policy) if policy else '',
                    quote_ident(measurement), quote_ident(tag),
                    quote_literal(tenant), lower, upper))
        results = run_target(items[0][1], ';'.join(statements))
        for (key, *_), result in zip(items, results):
            series = result.get('series') or []
            got = series[0]['values'][0][1] if series and \
                series[0].get('values') else 0
            if 'error' in result and 'not found' not in result['error']:
                raise RuntimeError('verifying %s: %s' % (database,
                                                         result['error']))
            report.checked += 1
            report.source_points += want[key]
            report.target_points += got
            entry = Mismatch(key[0], key[1], database, key[2] or '(default)',
                             want[key], got)
            if got < want[key]:
                report.mismatches.append(entry)
            elif got > want[key]:
                report.extra.append(entry)
    return report
