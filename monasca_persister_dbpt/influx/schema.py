"""Databases and their default retention policy, created before first write.

Creation is batched (many ``CREATE DATABASE`` statements in one request) and
remembered per process, so a first flush over a thousand new tenants costs a
couple of round trips instead of a 404 and a create per tenant. A database
whose policy no longer matches the mapping is altered, not ignored.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Callable, Iterable, Optional

from monasca_persister_dbpt.influx import influxql
from monasca_persister_dbpt.placement import Placement
from monasca_persister_dbpt.placement import RetentionPolicy
from monasca_persister_dbpt.placement import parse_duration

LOG = logging.getLogger(__name__)

#: Statements sent in one /query request.
STATEMENTS_PER_REQUEST = 500

_CONFLICT = 'retention policy conflicts with an existing policy'
_DURATION_PART = re.compile(r'(\d+)([hms])')


class SchemaError(RuntimeError):
    """InfluxDB refused to create or reconcile a database."""


def duration_hours(text: str) -> Optional[float]:
    """InfluxDB's ``336h0m0s`` in hours; ``0s`` (infinite) is None."""
    seconds = sum(int(n) * {'h': 3600, 'm': 60, 's': 1}[u]
                  for n, u in _DURATION_PART.findall(text))
    return None if seconds == 0 else seconds / 3600.0


def policy_matches(row: dict, rp: RetentionPolicy) -> bool:
    if duration_hours(row['duration']) != rp.hours:
        return False
    if rp.shard_duration:
        wanted = parse_duration(rp.shard_duration).hours
        return duration_hours(row['shardGroupDuration']) == wanted
    return True


# Query = callable(statements: str) -> list of per-statement result dicts.
Query = Callable[[str], list]


class Schema:
    """Remembers which databases exist with the right policy, per server."""

    def __init__(self, stats=None) -> None:
        self._known: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._stats = stats

    def known(self, placement: Placement) -> bool:
        return (placement.server.url, placement.database) in self._known

    def forget(self, placement: Placement) -> None:
        self._known.discard((placement.server.url, placement.database))

    def ensure(self, placements: Iterable[Placement], query: Query) -> None:
        """Create (or reconcile) every database not yet known, in few requests.

        All placements must be on the server *query* talks to.
        """
        with self._lock:
            todo = {}
            for p in placements:
                if not self.known(p):
                    todo.setdefault(p.database, p)
            if not todo:
                return
            existing = self._databases(query)
            known_before = [p for p in todo.values()
                            if p.database in existing]
            pending = [p for p in todo.values()
                       if p.database not in existing or p.retention
                       or p.tiers]
            steps = [step for p in pending for step in self._steps(p)]
            for start in range(0, len(steps), STATEMENTS_PER_REQUEST):
                self._run(steps[start:start + STATEMENTS_PER_REQUEST],
                          query, existing)
            self._drop_removed_tiers(known_before, query)
            for p in todo.values():
                self._known.add((p.server.url, p.database))

    @staticmethod
    def _databases(query: Query) -> set[str]:
        result = query('SHOW DATABASES')[0]
        if 'error' in result:
            raise SchemaError('SHOW DATABASES: %s' % result['error'])
        values = [v for s in result.get('series', []) for v in s.get('values') or []]
        return {v[0] for v in values}

    @staticmethod
    def _steps(p: Placement) -> list:
        """(placement, kind, tier, statement) to bring one database up."""
        steps = [(p, 'database', None,
                  influxql.create_database(p.database, p.retention))]
        for tier in p.tiers:
            steps.append((p, 'tier policy', tier,
                          influxql.create_policy(p.database, tier.policy)))
            steps.append((p, 'tier query', tier,
                          influxql.create_continuous_query(p.database, tier)))
        return steps

    def _run(self, steps: list, query: Query, existing: set) -> None:
        """Send the steps in one request; on a failure, find out why.

        InfluxDB 1.x stops a multi-statement request at the first failing
        statement and reports it only as "not executed" (the statements
        after it are not reported at all), so that one is sent again alone
        to learn its real error, handled, and the rest sent again.
        """
        while steps:
            results = query(';'.join(step[3] for step in steps))
            if not results:
                raise SchemaError('no answer to %s' % steps[0][3][:200])
            failed = next((i for i, r in enumerate(results) if 'error' in r),
                          len(results))
            for step in steps[:failed]:
                self._settle(step, None, query, existing)
            if failed < len(results):
                step = steps[failed]
                alone = query(step[3])
                self._settle(step, alone[0].get('error') if alone else None,
                             query, existing)
                failed += 1
            steps = steps[failed:]

    def _settle(self, step, error, query: Query, existing: set) -> None:
        p, kind, tier, statement = step
        if error is None:
            if kind == 'database' and p.database not in existing:
                existing.add(p.database)
                LOG.info('created database %s for tenant %s (%s)',
                         p.database, p.tenant_id,
                         p.retention.duration if p.retention
                         else 'server default retention')
                if self._stats is not None:
                    self._stats.add(p.tenant_id, 'databases_created')
            return
        if kind == 'database' and error == _CONFLICT:
            self._reconcile(p, query)
        elif kind == 'tier policy' and 'already exists' in error:
            self._must(query, influxql.alter_policy(p.database, tier.policy))
            LOG.warning('tier %s of database %s now keeps %s', tier.interval,
                        p.database, tier.policy.duration)
        elif kind == 'tier query' and 'already exists' in error:
            # Continuous queries cannot be altered: drop and create.
            self._must(query, influxql.drop_continuous_query(p.database,
                                                             tier.cq_name))
            self._must(query, statement)
            LOG.warning('continuous query %s of database %s replaced',
                        tier.cq_name, p.database)
        else:
            raise SchemaError('%s: %s' % (statement[:200], error))

    def _drop_removed_tiers(self, placements: list, query: Query) -> None:
        """Drop our continuous queries whose tier is no longer configured
        (their policies and data are kept)."""
        if not placements:
            return
        wanted = {p.database: {t.cq_name for t in p.tiers} for p in placements}
        result = query('SHOW CONTINUOUS QUERIES')[0]
        for series in result.get('series', []):
            database = series.get('name')
            if database not in wanted:
                continue
            for name, _ in series.get('values') or []:
                if name.startswith('dbpt_') and name not in wanted[database]:
                    self._must(query, influxql.drop_continuous_query(
                        database, name))
                    LOG.warning('continuous query %s of database %s dropped: '
                                'its tier is no longer configured', name,
                                database)

    @staticmethod
    def _must(query: Query, statement: str) -> None:
        result = query(statement)[0]
        if 'error' in result:
            raise SchemaError('%s: %s' % (statement[:200], result['error']))

    def _reconcile(self, p: Placement, query: Query) -> None:
        result = query(influxql.show_policies(p.database))[0]
        if 'error' in result:
            raise SchemaError('%s: %s' % (p.database, result['error']))
        series = result.get('series') or [{'columns': [], 'values': []}]
        rows = [dict(zip(series[0]['columns'], v))
                for v in series[0].get('values') or []]
        default = next((r for r in rows if r.get('default')), None)
        if default is not None and policy_matches(default, p.retention):
            return
        if default is None:
            statement = influxql.create_default_policy(p.database, p.retention)
            was = 'no default policy'
        else:
            statement = influxql.alter_default_policy(
                p.database, default['name'], p.retention)
            was = 'policy %s of %s' % (default['name'], default['duration'])
        result = query(statement)[0]
        if 'error' in result:
            raise SchemaError('%s: %s' % (statement, result['error']))
        LOG.warning('retention of database %s (tenant %s) changed from %s '
                    'to %s', p.database, p.tenant_id, was, p.retention.duration)
        if self._stats is not None:
            self._stats.add(p.tenant_id, 'policies_altered')
