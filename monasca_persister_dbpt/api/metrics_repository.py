"""monasca-api's InfluxDB repository, reading each tenant from its own place.

Name it in monasca-api.conf::

    [repositories]
    metrics_driver = monasca_persister_dbpt.api.metrics_repository:MetricsRepository

Every query monasca-api builds goes through ``query_tenant_db``; this class
sends it to the server and database the persister writes the tenant to,
asking the same :class:`~monasca_persister_dbpt.placement.PlacementMap`
(servers, the tenant overrides file and its reload, rendezvous hashing, the
database template), with one keep-alive client per server. The ``[dbpt]``
options are read from monasca-api.conf, so copy them there from
persister.conf (the devstack plugin does).

With ``[dbpt] read_tiers`` a statistics query whose period is at least a
tier's interval and whose start is older than the raw policy keeps is
answered from the finest such tier (see :func:`tier_for`).

While a tenant moves to another server (``monasca-persister-dbpt-migrate
--rebalance``), its reads go to both: each server answers for its own time
range and the answers are merged (:mod:`.merge`,
:mod:`monasca_persister_dbpt.placement.moves`), so a move never shows a
partial history.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Optional

import requests
from influxdb import InfluxDBClient
from influxdb.exceptions import InfluxDBClientError, InfluxDBServerError
from influxdb.resultset import ResultSet
from monasca_api.common.repositories.influxdb import metrics_repository \
    as upstream
from oslo_config import cfg
from oslo_log import log

from monasca_persister_dbpt import conf as dbpt_conf
from monasca_persister_dbpt.api import merge
from monasca_persister_dbpt.api.replicas import NoReplica, ReplicaChooser
from monasca_persister_dbpt.influx.influxql import quote_ident
from monasca_persister_dbpt.placement import InvalidTenantId, Placement
from monasca_persister_dbpt.placement import PlacementMap, Server
from monasca_persister_dbpt.placement import moves
from monasca_persister_dbpt.placement import stale

LOG = log.getLogger(__name__)

#: monasca-api's statistics query: ``select <fn>(value),... from "<name>"
#: where ... time >= <us>u ... group by [<tags>,]time(<period>s)`` (the
#: tags are its ``group_by``: ``*`` or dimension names).
_STATISTICS = re.compile(
    r'^select (?P<fns>(?:(?:mean|min|max|count|sum)\(value\),?)+) '
    r'(?P<rest>\s*from\s+"(?P<name>(?:[^"\\]|\\.)*)".*?'
    r'time >= (?P<start>-?\d+)u.*?group by (?:[^()]*,)?'
    r'time\((?P<period>\d+)s\).*)$',
    re.S)
#: A statistic of raw ``value`` -> the same from a tier's fields
#: (:data:`monasca_persister_dbpt.influx.influxql.TIER_FIELDS`).
_FROM_TIER = {
    'mean(value)': 'sum("sum") / sum("count") AS "mean"',
    'min(value)': 'min("min") AS "min"',
    'max(value)': 'max("max") AS "max"',
    'count(value)': 'sum("count") AS "count"',
    'sum(value)': 'sum("sum") AS "sum"',
}


def tier_for(placement: Placement, period: int, start_us: int,
             now: float) -> Optional[object]:
    """The finest tier that can answer a statistics query, or None.

    A tier holds its statistics per interval, so it serves periods that are
    a whole number of its intervals, from a start older than the raw policy
    keeps and no older than the tier keeps.
    """
    raw = placement.retention
    if raw is None or raw.hours is None:
        return None  # the raw data reaches back for ever
    raw_from = now - raw.hours * 3600
    if start_us / 1e6 >= raw_from:
        return None
    for tier in sorted(placement.tiers, key=lambda t: t.seconds):
        kept = tier.policy.hours
        if period < tier.seconds or period % tier.seconds:
            continue
        if kept is not None and start_us / 1e6 < now - kept * 3600:
            continue
        return tier
    return None


class MetricsRepository(upstream.MetricsRepository):
    def __init__(self) -> None:
        conf = cfg.CONF
        dbpt_conf.register_opts(conf)
        try:
            self.placements = PlacementMap.from_conf(conf)
        except ValueError as exc:
            LOG.error('monasca-persister-dbpt read driver refuses to start: '
                      '%s', exc)
            raise
        self._clients: dict[Server, InfluxDBClient] = {}
        self._lock = threading.Lock()
        self._read_tiers = conf.dbpt.read_tiers
        # Replicas: a server that does not answer in time is skipped.
        self._timeout = conf.dbpt.replica_read_timeout \
            if self.placements.replicated else None
        super().__init__()
        if self._timeout is None:
            self._clients[self.placements.default_server] = \
                self.influxdb_client
        # With one server nothing can move.
        servers = set(self.placements.servers.values())
        self.moves = moves.MoveTable(servers, self._look,
                                     self.placements.tenant_of) \
            if len(servers) > 1 else None
        self.replicas = ReplicaChooser(
            stale.StaleTable(servers, self._stale_markers),
            self.moves.holders if self.moves is not None else None) \
            if len(servers) > 1 else None
        LOG.info('monasca-persister-dbpt read driver: databases %s%s',
                 self.placements.describe(),
                 '; statistics from tiers when older than the raw policy'
                 if self._read_tiers and self.placements.tiers else '')

    def _client(self, server: Server) -> InfluxDBClient:
        client = self._clients.get(server)
        if client is None:
            with self._lock:
                client = self._clients.get(server)
                if client is None:
                    client = self._clients[server] = InfluxDBClient(
                        server.host, server.port, server.user,
                        server.password, ssl=server.ssl,
                        verify_ssl=server.verify_ssl, timeout=self._timeout,
                        # One try: the next replica is the retry.
                        retries=1 if self._timeout else 3)
        return client

    def _look(self, server: Server) -> tuple[set, list]:
        """A server's databases and move markers (for the MoveTable)."""
        client = self._client(server)
        databases = {row['name'] for row in
                     client.query('SHOW DATABASES').get_points()}
        markers = []
        if moves.DATABASE in databases:
            markers = moves.parse_markers(
                client.query(moves.SELECT_MARKERS).raw)
        return databases, markers

    def _stale_markers(self, server: Server) -> list:
        """A server's stale ranges (for the StaleTable)."""
        client = self._client(server)
        try:
            result = client.query(stale.SELECT_MARKERS, epoch='ns')
        except InfluxDBClientError as ex:
            if 'not found' in str(ex):
                return []
            raise
        return stale.parse_markers(result.raw)

    def query_tenant_db(self, query, tenant_id):
        try:
            placement = self.placements.place(tenant_id)
        except InvalidTenantId:
            return None  # the persister never stores such a tenant
        if placement.replicas and self.replicas is not None:
            return self._from_a_replica(query, placement)
        return self._read(query, placement)

    def _from_a_replica(self, query: str, placement: Placement):
        """The answer of the first replica that can give it whole."""
        lower, upper = merge.time_range(query)
        copies, skipped = self.replicas.order(placement, lower, upper)
        failures = []
        for copy in copies:
            try:
                result = self._read(query, copy, placement.servers)
            except (requests.ConnectionError, requests.Timeout,
                    InfluxDBServerError) as exc:
                self.replicas.failed(copy.server)
                failures.append('%s: %s' % (copy.server.url,
                                            str(exc)[:200]))
                LOG.warning('replica %s of tenant %s did not answer (%s); '
                            'asking the next', copy.server.url,
                            placement.tenant_id, str(exc)[:200])
                continue
            self.replicas.answered(copy.server)
            return result
        raise NoReplica('no replica of tenant %s can answer: %s' % (
            placement.tenant_id, '; '.join(skipped + failures) or
            'none configured'))

    def _read(self, query: str, placement: Placement,
              replicas: tuple = ()):
        tenant_id = placement.tenant_id
        parts = self.moves.parts(tenant_id, placement.server, replicas) \
            if self.moves is not None else ()
        if len(parts) > 1:
            merged = self._query_parts(query, placement, parts)
            if merged is not None:  # a query shape merge.py knows
                return merged
        if self._read_tiers and placement.tiers:
            query = self._tiered(query, placement)
        return self._ask(placement.server, query, placement.database)

    def _ask(self, server: Server, query: str, database: str,
             epoch: Optional[str] = None):
        try:
            return self._client(server).query(query, database=database,
                                              epoch=epoch)
        except InfluxDBClientError as ex:
            if str(ex).startswith(upstream.DATABASE_NOT_FOUND_MSG) and \
                    self.placements.db_per_tenant:
                return None
            raise

    def _query_parts(self, query: str, placement: Placement,
                     parts) -> Optional[ResultSet]:
        """The answer of several servers, each for its own time range, as
        one server holding everything would give it (None: a query shape
        this does not know, for the tenant's own server alone)."""
        lowered = query.lstrip().lower()

        def ask_all(statement, bounded=True, upper=True):
            answers = []
            for part in parts:
                result = self._ask(part.server, merge.bound(
                    statement, part.lower, part.upper if upper else None)
                    if bounded else statement, placement.database)
                answers.append(result.raw if result is not None else {})
            return answers
        if lowered.startswith('show'):
            statement, limit, offset = merge.strip_paging(query)
            raw = merge.merge_show(ask_all(statement, bounded=False), limit,
                                   offset)
        elif (found := _STATISTICS.match(query)) is not None:
            fns = found.group('fns').rstrip(',').split(',')
            tier = tier_for(placement, int(found.group('period')),
                            int(found.group('start')), time.time()) \
                if self._read_tiers and placement.tiers else None
            statement = self._statistics(found, tier, partial=True)
            answers = ask_all(statement)
            if tier is None:
                answers += self._stragglers(query, found, placement, parts)
            raw = merge.merge_statistics(
                answers, [merge.STAT_COLUMNS[fn] for fn in fns],
                merge.limit_of(query), merge.slimit_of(query))
        elif lowered.startswith('select'):
            # Rows can be told apart: each source is asked for all it holds
            # and what both hold (a copy, or a point written to the old
            # server after the split) is returned once.
            raw = merge.merge_rows(ask_all(query, upper=False),
                                   merge.limit_of(query),
                                   merge.slimit_of(query))
        else:
            return None
        # Empty is an answer too (monasca-api reads no series from it):
        # never ask the tenant's own server again.
        return ResultSet(raw)

    def _stragglers(self, query: str, found, placement: Placement,
                    parts) -> list[dict]:
        """Per period, the points an old copy holds from its split on that
        the tenant's own server does not hold yet (a persister still on
        the old map wrote them; the rebalance copies them later): a
        listing returns them, so statistics count them too."""
        home = parts[-1].server
        rest = found.group('rest')
        where = 'select value ' + rest[:merge._clause_end(rest)]
        period = int(found.group('period'))
        out = []
        for part in parts[:-1]:
            if part.upper is None:
                continue  # no split: that copy is answered whole already
            old = self._ask(part.server, merge.bound(
                where + ' group by *', part.upper, None),
                placement.database, epoch='ns')
            old = old.raw if old is not None else {}
            times = sorted({row[0] for s in old.get('series') or ()
                            for row in s.get('values') or ()})
            if not times:
                continue
            # Over their span (InfluxQL has no OR of times).
            new = self._ask(home, merge.bound(where + ' group by *',
                                              times[0], times[-1] + 1),
                            placement.database, epoch='ns')
            out.append(merge.stragglers(
                old, merge.point_keys(new.raw if new is not None else {}),
                merge.grouping(query), period))
        return out

    def _tiered(self, query: str, placement: Placement) -> str:
        found = _STATISTICS.match(query)
        if not found:
            return query
        tier = tier_for(placement, int(found.group('period')),
                        int(found.group('start')), time.time())
        if tier is None:
            return query
        return self._statistics(found, tier)

    @staticmethod
    def _statistics(found, tier, partial: bool = False) -> str:
        """A statistics query from *tier* (None: the raw policy), asking
        either what monasca-api asked or, *partial*, what merges across
        servers (min, max, count, sum)."""
        if partial:
            fns = merge.PARTIAL_TIER if tier is not None else \
                merge.PARTIAL_RAW
        elif tier is not None:
            # Each statistic from what the tier keeps per interval, under
            # the column name monasca-api expects: exact, not a mean of
            # means.
            fns = ', '.join(_FROM_TIER[fn] for fn in
                            found.group('fns').rstrip(',').split(','))
        else:
            fns = found.group('fns')
        rest = found.group('rest')
        if tier is not None:
            name = found.group('name')
            rest = rest.replace('from  "%s"' % name, 'from %s."%s"' % (
                quote_ident(tier.policy.name), name), 1)
        return 'select %s %s' % (fns, rest)

    @staticmethod
    def check_status():
        """Every configured server answers /ping."""
        placements = PlacementMap.from_conf(cfg.CONF)
        for name, server in sorted(placements.servers.items()):
            try:
                response = requests.head(server.url + '/ping', timeout=5,
                                         verify=server.verify_ssl)
            except requests.RequestException as exc:
                return False, 'InfluxDB %s (%s): %s' % (name, server.url,
                                                        exc)
            if not response.ok:
                return False, 'InfluxDB %s (%s): HTTP %d' % (
                    name, server.url, response.status_code)
        return True, 'OK'
