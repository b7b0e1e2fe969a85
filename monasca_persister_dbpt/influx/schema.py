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
_NOT_EXECUTED = 'not executed'
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
            pending = [p for p in todo.values()
                       if p.database not in existing or p.retention]
            for start in range(0, len(pending), STATEMENTS_PER_REQUEST):
                self._create(pending[start:start + STATEMENTS_PER_REQUEST],
                             query, existing)
            for p in todo.values():
                self._known.add((p.server.url, p.database))

    @staticmethod
    def _databases(query: Query) -> set[str]:
        result = query('SHOW DATABASES')[0]
        if 'error' in result:
            raise SchemaError('SHOW DATABASES: %s' % result['error'])
        values = [v for s in result.get('series', []) for v in s.get('values') or []]
        return {v[0] for v in values}

    def _create(self, batch: list, query: Query, existing: set) -> None:
        while batch:
            results = query(';'.join(influxql.create_database(p.database,
                                                              p.retention)
                                     for p in batch))
            rest = []
            for p, result in zip(batch, results):
                error = result.get('error')
                if error is None:
                    if p.database not in existing:
                        existing.add(p.database)
                        LOG.info('created database %s for tenant %s (%s)',
                                 p.database, p.tenant_id,
                                 p.retention.duration if p.retention
                                 else 'server default retention')
                        if self._stats is not None:
                            self._stats.add(p.tenant_id, 'databases_created')
                elif error == _NOT_EXECUTED:
                    rest.append(p)
                elif error == _CONFLICT:
                    self._reconcile(p, query)
                else:
                    raise SchemaError('creating database %s: %s'
                                      % (p.database, error))
            # A failing statement stops the ones after it; send those again.
            batch = rest + batch[len(results):]

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
