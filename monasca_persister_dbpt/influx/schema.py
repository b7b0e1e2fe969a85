"""Databases and their default retention policy, created before first write.

Creation is batched (many ``CREATE DATABASE`` statements in one request) and
remembered per process, so a first flush over a thousand new tenants costs a
couple of round trips instead of a 404 and a create per tenant. A database
whose policy no longer matches the mapping is altered, not ignored.

InfluxDB's answer to one statement concerns one tenant database: a refusal
(an invalid name, a policy change it will not make) is recorded against that
database alone, for ``REFUSED_FOR`` seconds, and never fails the others of
the same request. Only a request that gets no answer is the server's fault.
What is remembered is bounded, whatever the number of tenants ever seen.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import re
import threading
import time
from typing import Callable, Iterable, Optional

from monasca_persister_dbpt.influx import influxql
from monasca_persister_dbpt.placement import Placement
from monasca_persister_dbpt.placement import RetentionPolicy
from monasca_persister_dbpt.placement import default_shard_hours
from monasca_persister_dbpt.placement import parse_duration

LOG = logging.getLogger(__name__)

#: Statements sent in one /query request.
STATEMENTS_PER_REQUEST = 500
#: Databases remembered as existing with the right policy (least recently
#: used forgotten first; a forgotten one is checked again, cheaply).
KNOWN_MAX = 50000
#: Seconds a database InfluxDB refused stays refused before it is tried
#: again (an operator may have fixed it meanwhile).
REFUSED_FOR = 60.0

_CONFLICT = 'retention policy conflicts with an existing policy'
_DURATION_PART = re.compile(r'(\d+)([hms])')


class SchemaError(RuntimeError):
    """InfluxDB refused to create or reconcile a database."""


class DatabaseRefused(SchemaError):
    """InfluxDB refused one tenant database for good; its points are
    refused for a while, and nobody else's."""

    def __init__(self, placement: Placement, error: str) -> None:
        super().__init__('InfluxDB at %s refused database %s of tenant %s: '
                         '%s' % (placement.server.url, placement.database,
                                 placement.tenant_id, error))
        self.placement = placement


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
    """Remembers which databases exist with the right policy, per server,
    and which InfluxDB refused."""

    def __init__(self, stats=None, known_max: int = KNOWN_MAX,
                 refused_for: float = REFUSED_FOR) -> None:
        self._known: collections.OrderedDict = collections.OrderedDict()
        self._known_max = known_max
        self._refused: collections.OrderedDict = collections.OrderedDict()
        self._refused_for = refused_for
        self._lock = threading.Lock()
        self._stats = stats

    def __len__(self) -> int:
        return len(self._known) + len(self._refused)

    def known(self, placement: Placement) -> bool:
        """Whether the database exists with the placement's policies (a
        retention or tiers changed at run time make it unknown again, so
        the next write reconciles them)."""
        key = (placement.server.url, placement.database)
        policies = self._known.get(key)
        if policies is None:
            return False
        try:
            self._known.move_to_end(key)
        except KeyError:  # forgotten by another thread meanwhile
            return False
        return policies == (placement.retention, placement.tiers)

    def _remember(self, placement: Placement) -> None:
        self._known[(placement.server.url, placement.database)] = (
            placement.retention, placement.tiers)
        while len(self._known) > self._known_max:
            self._known.popitem(last=False)

    def forget(self, placement: Placement) -> None:
        self._known.pop((placement.server.url, placement.database), None)

    def refused(self, placement: Placement) -> Optional[DatabaseRefused]:
        """The refusal still in force for *placement*'s database, if any."""
        entry = self._refused.get((placement.server.url, placement.database))
        if entry is None:
            return None
        until, exc = entry
        if time.monotonic() < until:
            return exc
        self._refused.pop((placement.server.url, placement.database), None)
        return None

    def _refuse(self, placement: Placement, error: str) -> DatabaseRefused:
        exc = DatabaseRefused(placement, error)
        key = (placement.server.url, placement.database)
        self._refused[key] = (time.monotonic() + self._refused_for, exc)
        while len(self._refused) > self._known_max:
            self._refused.popitem(last=False)
        self._known.pop(key, None)
        LOG.error('%s; its points are refused for the next %.0fs, other '
                  'tenants are not affected', exc, self._refused_for)
        return exc

    def ensure(self, placements: Iterable[Placement],
               query: Query) -> dict[Placement, DatabaseRefused]:
        """Create (or reconcile) every database not yet known, in few
        requests; the ones InfluxDB refused, and why.

        All placements must be on the server *query* talks to. A request
        that gets no answer raises (the server's fault, not a tenant's).
        """
        with self._lock:
            todo = {}
            for p in placements:
                if not self.known(p) and self.refused(p) is None:
                    todo.setdefault(p.database, p)
            if not todo:
                return {}
            existing = self._databases(query)
            known_before = [p for p in todo.values()
                            if p.database in existing]
            pending = [p for p in todo.values()
                       if p.database not in existing or p.retention
                       or p.tiers]
            steps = [step for p in pending for step in self._steps(p)]
            refused: dict[str, DatabaseRefused] = {}
            for start in range(0, len(steps), STATEMENTS_PER_REQUEST):
                self._run(steps[start:start + STATEMENTS_PER_REQUEST],
                          query, existing, refused)
            self._drop_removed_tiers(
                [p for p in known_before if p.database not in refused],
                query, refused)
            for p in todo.values():
                if p.database not in refused:
                    self._remember(p)
            return {exc.placement: exc for exc in refused.values()}

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

    def _run(self, steps: list, query: Query, existing: set,
             refused: dict) -> None:
        """Send the steps in one request; on a failure, find out why.

        InfluxDB 1.x stops a multi-statement request at the first failing
        statement and reports it only as "not executed" (the statements
        after it are not reported at all), so that one is sent again alone
        to learn its real error, handled, and the rest sent again. A
        request refused as a whole is split into single statements.
        """
        while steps:
            steps = [s for s in steps if s[0].database not in refused]
            if not steps:
                return
            try:
                results = query(';'.join(step[3] for step in steps))
            except SchemaError as exc:
                if len(steps) == 1:
                    self._refuse_step(steps[0], str(exc), refused)
                    return
                for step in steps:
                    self._run([step], query, existing, refused)
                return
            if not results:
                raise SchemaError('no answer to %s' % steps[0][3][:200])
            failed = next((i for i, r in enumerate(results) if 'error' in r),
                          len(results))
            for step in steps[:failed]:
                self._settle_or_refuse(step, None, query, existing, refused)
            if failed < len(results):
                step = steps[failed]
                try:
                    alone = query(step[3])
                    error = alone[0].get('error') if alone else None
                except SchemaError as exc:
                    error = str(exc)
                self._settle_or_refuse(step, error, query, existing, refused)
                failed += 1
            steps = steps[failed:]

    def _settle_or_refuse(self, step, error, query, existing,
                          refused) -> None:
        try:
            self._settle(step, error, query, existing)
        except SchemaError as exc:
            self._refuse_step(step, str(exc), refused)

    def _refuse_step(self, step, error: str, refused: dict) -> None:
        placement = step[0]
        if placement.database not in refused:
            refused[placement.database] = self._refuse(placement, error)
            if self._stats is not None:
                self._stats.add(placement.tenant_id, 'databases_refused')

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
            # Continuous queries cannot be altered: drop and create. Every
            # worker does so when a tenant's tiers change (at start-up, or
            # at run time from the overrides file), so another's drop or
            # create in between is as good as ours, not a refusal.
            self._must(query, influxql.drop_continuous_query(
                p.database, tier.cq_name), unless='not found')
            self._must(query, statement, unless='already exists')
            LOG.warning('continuous query %s of database %s replaced',
                        tier.cq_name, p.database)
        else:
            raise SchemaError('%s: %s' % (statement[:200], error))

    def _drop_removed_tiers(self, placements: list, query: Query,
                            refused: dict) -> None:
        """Drop our continuous queries whose tier is no longer configured
        (their policies and data are kept)."""
        if not placements:
            return
        wanted = {p.database: p for p in placements}
        result = query('SHOW CONTINUOUS QUERIES')[0]
        for series in result.get('series', []):
            database = series.get('name')
            if database not in wanted:
                continue
            p = wanted[database]
            keep = {t.cq_name for t in p.tiers}
            for name, _ in series.get('values') or []:
                if name.startswith('dbpt_') and name not in keep:
                    try:
                        self._must(query, influxql.drop_continuous_query(
                            database, name))
                    except SchemaError as exc:
                        refused[database] = self._refuse(p, str(exc))
                        break
                    LOG.warning('continuous query %s of database %s dropped: '
                                'its tier is no longer configured', name,
                                database)

    @staticmethod
    def _must(query: Query, statement: str, unless: str = '') -> None:
        """Run *statement*; raise on an error (but one containing *unless*)."""
        result = query(statement)[0]
        error = result.get('error')
        if error and not (unless and unless in error):
            raise SchemaError('%s: %s' % (statement[:200], error))

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
        rp = p.retention
        if default is None:
            statement = influxql.create_default_policy(p.database, rp)
            was = 'no default policy'
        else:
            shard = duration_hours(default.get('shardGroupDuration', ''))
            if rp.shard_duration is None and rp.hours is not None and \
                    shard is not None and shard > rp.hours:
                # InfluxDB refuses a policy shorter than its shard groups:
                # shorten those too, as InfluxDB would pick for it.
                rp = dataclasses.replace(
                    rp, shard_duration='%dh' % default_shard_hours(rp.hours))
            statement = influxql.alter_default_policy(
                p.database, default['name'], rp)
            was = 'policy %s of %s' % (default['name'], default['duration'])
        result = query(statement)[0]
        if 'error' in result:
            raise SchemaError('%s: %s' % (statement, result['error']))
        LOG.warning('retention of database %s (tenant %s) changed from %s '
                    'to %s', p.database, p.tenant_id, was, p.retention.duration)
        if self._stats is not None:
            self._stats.add(p.tenant_id, 'policies_altered')
