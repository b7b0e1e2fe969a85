"""Which tenant databases exist, where, and how big: read from influxd.

Every configured server is asked in parallel, and each with a handful of
requests whatever the number of tenants (10,000 databases are a few
batched requests, not 10,000 round trips):

- ``SHOW DATABASES``: the tenant databases, found by reading the database
  template backwards; the shared database, ``_internal`` and our own are
  never tenant databases;
- ``SHOW STATS``: series (the ``database`` module's ``numSeries``, the
  index's own count: exact with the ``inmem`` index, an estimate with
  ``tsi1``) and disk (the ``shard`` module's ``diskBytes``: TSM files plus
  WAL, as influxd last measured them, summed over the database's shards);
- ``SHOW SHARDS``: which shard of the default policy is the newest, so
  that the newest point is looked for in that shard alone;
- ``SHOW RETENTION POLICIES`` and the newest-point ``SELECT``: batched,
  many databases to a request.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
from typing import Iterable, Optional

from monasca_persister_dbpt.influx.influxql import quote_ident
from monasca_persister_dbpt.influx.writer import InfluxWriter, WriteFailed
from monasca_persister_dbpt.placement import Placement, PlacementMap, Server

#: Statements sent in one request when each database needs its own.
STATEMENTS_PER_REQUEST = 200


@dataclasses.dataclass
class Policy:
    name: str
    duration: str
    default: bool

    def __str__(self) -> str:
        return '%s:%s%s' % (self.name, self.duration,
                            '*' if self.default else '')


@dataclasses.dataclass
class Copy:
    """One tenant database on one server."""

    server_name: str
    server: Server
    database: str
    #: Whether the tenant's placement names this server (else the copy is
    #: a leftover: a move not yet dropped, a copy a repair rebuilt, ...).
    placed: bool = True
    policies: list = dataclasses.field(default_factory=list)
    series: Optional[int] = 0
    disk_bytes: Optional[int] = 0
    #: Newest point of the default policy, ns since the epoch.
    newest: Optional[int] = None

    @property
    def default_policy(self) -> Optional[str]:
        return next((p.name for p in self.policies if p.default), None)


@dataclasses.dataclass
class TenantDatabases:
    """Every copy of one tenant's database, and where it belongs."""

    tenant_id: str
    placement: Placement
    copies: list = dataclasses.field(default_factory=list)

    @property
    def database(self) -> str:
        return self.placement.database


@dataclasses.dataclass
class Scan:
    tenants: dict
    #: ``server name (url): why`` for each server that did not answer.
    unreachable: list


def _rows(result: dict) -> Iterable[tuple]:
    """(series name, tags, row dict) of one statement's result."""
    for series in result.get('series') or ():
        columns = series.get('columns') or ()
        for values in series.get('values') or ():
            yield series.get('name'), series.get('tags') or {}, \
                dict(zip(columns, values))


def _ns(rfc3339: str) -> int:
    moment = datetime.datetime.fromisoformat(rfc3339.replace('Z', '+00:00'))
    return int(moment.timestamp()) * 10 ** 9


class Inventory:
    """Reads what the configured servers hold for tenants."""

    def __init__(self, placements: PlacementMap, writer: InfluxWriter) -> None:
        self.placements = placements
        self.writer = writer

    def servers(self) -> dict:
        """name -> Server, one name per server (the first, sorted)."""
        seen, out = set(), {}
        for name, server in sorted(self.placements.servers.items()):
            if server not in seen:
                seen.add(server)
                out[name] = server
        return out

    def scan(self, tenants: Optional[set] = None, details: bool = True) -> Scan:
        """Every tenant database on every server (only *tenants*' when
        given); *details* False: names alone (no sizes, policies, times)."""
        found: dict = {}
        unreachable = []
        servers = self.servers()
        with concurrent.futures.ThreadPoolExecutor(
                max_workers=max(1, len(servers))) as pool:
            futures = {name: pool.submit(self._scan_server, server, tenants,
                                         details)
                       for name, server in servers.items()}
        for name, future in futures.items():
            server = servers[name]
            try:
                copies = future.result()
            except (WriteFailed, OSError) as exc:
                unreachable.append('%s (%s): %s' % (name, server.url, exc))
                continue
            for tenant_id, copy in copies:
                copy.server_name = name
                entry = found.get(tenant_id)
                if entry is None:
                    entry = found[tenant_id] = TenantDatabases(
                        tenant_id, self.placements.place(tenant_id))
                copy.placed = server in entry.placement.servers
                entry.copies.append(copy)
        for entry in found.values():
            entry.copies.sort(key=lambda c: (not c.placed, c.server_name))
        return Scan(dict(sorted(found.items())), unreachable)

    def _scan_server(self, server: Server, tenants: Optional[set],
                     details: bool) -> list:
        result = self.writer.run(server, 'SHOW DATABASES')[0]
        copies = []
        for _, _, row in _rows(result):
            tenant_id = self.placements.tenant_of(row['name'])
            if tenant_id is None or (tenants is not None and
                                     tenant_id not in tenants):
                continue
            copies.append((tenant_id, Copy('', server, row['name'])))
        if details and copies:
            self._details(server, {c.database: c for _, c in copies})
        return copies

    def _details(self, server: Server, copies: dict) -> None:
        stats = self.writer.run(server, "SHOW STATS FOR 'database'; "
                                        "SHOW STATS FOR 'shard'; SHOW SHARDS")
        for _, tags, row in _rows(stats[0]):
            copy = copies.get(tags.get('database'))
            if copy is not None:
                copy.series = row.get('numSeries')
        for _, tags, row in _rows(stats[1]):
            copy = copies.get(tags.get('database'))
            if copy is not None:
                copy.disk_bytes = (copy.disk_bytes or 0) + \
                    int(row.get('diskBytes') or 0)
        newest_shard: dict = {}
        for _, _, row in _rows(stats[2]):
            key = (row.get('database'), row.get('retention_policy'))
            if key[0] in copies and (key not in newest_shard or
                                     row['end_time'] >
                                     newest_shard[key]['end_time']):
                newest_shard[key] = row
        databases = list(copies)
        for database, result in zip(databases, self._each(
                server, ('SHOW RETENTION POLICIES ON %s' % quote_ident(d)
                         for d in databases))):
            copies[database].policies = [
                Policy(row['name'], row['duration'], bool(row['default']))
                for _, _, row in _rows(result)]
        asked = []
        for database, copy in copies.items():
            shard = newest_shard.get((database, copy.default_policy))
            if shard is not None:
                asked.append((copy, 'SELECT * FROM %s.%s./.*/ WHERE time >= '
                              '%d ORDER BY time DESC LIMIT 1' % (
                                  quote_ident(database),
                                  quote_ident(copy.default_policy),
                                  _ns(shard['start_time']))))
        for (copy, _), result in zip(asked, self._each(
                server, (statement for _, statement in asked))):
            times = [values[0] for series in result.get('series') or ()
                     for values in series.get('values') or ()]
            copy.newest = max(times) if times else None

    def _each(self, server: Server, statements: Iterable[str]) -> list:
        """One result per statement, many statements to a request."""
        statements = list(statements)
        results: list = []
        for start in range(0, len(statements), STATEMENTS_PER_REQUEST):
            batch = statements[start:start + STATEMENTS_PER_REQUEST]
            results.extend(self.writer.run(server, ';\n'.join(batch)))
        return results

    def measurements(self, copy: Copy) -> list:
        """The measurements of one copy (``SHOW MEASUREMENTS``)."""
        result = self.writer.run(copy.server, 'SHOW MEASUREMENTS ON %s'
                                 % quote_ident(copy.database))[0]
        return [row['name'] for _, _, row in _rows(result)]
