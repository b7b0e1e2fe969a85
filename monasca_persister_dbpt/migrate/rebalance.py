"""``--rebalance``: move every tenant database to the server its placement
names now (after a server was added, a weight or the overrides file
changed).

Each run repeats every step, and each step is idempotent:

1. *find*: every server's tenant databases (the database template read
   backwards) that live on a server other than the tenant's placement;
2. *mark*: a ``copying`` marker with the split time on the target (see
   :mod:`monasca_persister_dbpt.placement.moves`), then a wait so that the
   monasca-api read drivers see it before anything is copied;
3. *copy*: the migration's planner and streaming copy from that database
   on the old server, every policy into the same policy of the new one
   (a tier into that tier, the old default into the new default),
   checkpointed;
4. *verify*: point counts per field, time unit, measurement and policy;
   what is short is copied again;
5. *mark verified*; with ``--drop-source``, after another wait for the
   readers and a last count that finds the source unchanged, drop the old
   database.

A move that fails leaves its source as it was and makes the run exit 1.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import threading
import time
from typing import Optional

import requests

from monasca_persister_dbpt.influx import identity
from monasca_persister_dbpt.influx.influxql import quote_ident
from monasca_persister_dbpt.influx.schema import duration_hours
from monasca_persister_dbpt.influx.writer import InfluxWriter, WriteFailed
from monasca_persister_dbpt.migrate.checkpoint import Checkpoint
from monasca_persister_dbpt.migrate.copy import Copier, Progress
from monasca_persister_dbpt.migrate.plan import MAX_NS, MIN_NS, Planner
from monasca_persister_dbpt.migrate.verify import missing_lines, verify
from monasca_persister_dbpt.placement import Placement, PlacementMap, Server
from monasca_persister_dbpt.placement import moves

LOG = logging.getLogger(__name__)

#: Rounds of repair per move (as the migration).
REPAIR_ROUNDS = 2
#: Default wait for readers to see a marker: two of their refreshes.
SETTLE_SECONDS = 2 * moves.REFRESH_EVERY


@dataclasses.dataclass(frozen=True)
class MoveJob:
    tenant_id: str
    database: str
    source: Server
    placement: Placement
    #: The points copied (ns, inclusive): all of them for a move, a
    #: stale range for a repair.
    lower: int = MIN_NS
    upper: int = MAX_NS

    def __str__(self) -> str:
        return 'tenant %s (%s): %s -> %s' % (
            self.tenant_id, quote_ident(self.database), self.source.url,
            self.placement.server.url)


class MovePlanner(Planner):
    """The migration's planner over one tenant database on its old server:
    only that tenant's points, the whole history, each policy to its own.

    The source's default policy goes to the new database's default (the
    raw policy, which may be named otherwise there); a tier to that tier;
    any other policy (a tier no longer configured, an old default) to a
    policy of the same name and duration, made for it on the new server
    (:meth:`kept_policies`), never into the raw policy.
    """

    def __init__(self, run, placements: PlacementMap, job: MoveJob,
                 **kwargs) -> None:
        super().__init__(run, placements, job.database, start_offset=0,
                         end_offset=0, **kwargs)
        self.job = job
        # A replica's target server too: one source may feed several.
        self.origin = job.source.url if not job.placement.replicas else \
            '%s>%s' % (job.source.url, job.placement.server.url)
        self.lower = job.lower
        self.upper = job.upper
        self._source_policies: Optional[dict] = None

    def source_policies(self) -> dict:
        """name -> the source's SHOW RETENTION POLICIES row."""
        if self._source_policies is None:
            self._source_policies = {r['name']: r for r in self.rows(
                'SHOW RETENTION POLICIES ON %s' % quote_ident(self.source))}
        return self._source_policies

    def _tier_policy(self, placement: Placement, source_rp: str):
        return next((t.policy for t in placement.tiers
                     if t.policy.name == source_rp), None)

    def _is_default(self, source_rp: str) -> bool:
        return bool(self.source_policies().get(source_rp, {}).get('default'))

    def target_policy(self, placement: Placement,
                      source_rp: str) -> Optional[str]:
        policy = self._tier_policy(placement, source_rp)
        if policy is not None:
            return policy.name
        return None if self._is_default(source_rp) else source_rp

    def target_hours(self, placement: Placement,
                     source_rp: str) -> Optional[int]:
        policy = self._tier_policy(placement, source_rp)
        if policy is not None:
            return policy.hours
        if self._is_default(source_rp):
            return super().target_hours(placement, source_rp)
        row = self.source_policies().get(source_rp)
        hours = duration_hours(row['duration']) if row else None
        return hours  # type: ignore[return-value]

    def kept_policies(self) -> list[dict]:
        """The source policies the placement does not know (neither its
        default nor a tier): each is copied into one of its own name."""
        placement = self.job.placement
        return [row for name, row in sorted(self.source_policies().items())
                if not row.get('default') and
                self._tier_policy(placement, name) is None]

    def targets(self, tenant_id: str) -> tuple:
        # One copy per move: a replica's moves are one each.
        return (self.job.placement,)

    def accepts(self, tenant_id: str,
                placement: Optional[Placement] = None) -> Optional[str]:
        # The source is the tenant's own database, on the old server.
        if tenant_id == self.job.tenant_id:
            return None
        return ('points of tenant %r in the database of tenant %r: left in '
                'place' % (tenant_id, self.job.tenant_id))

    def earliest(self, policies: Optional[list] = None) -> Optional[int]:
        """The time of the oldest point in the database, in *policies*
        (default: all of them)."""
        first = None
        measurements = self.measurements()
        for rp in policies if policies is not None else self.policies():
            for measurement in measurements:
                field = self.count_field(measurement, rp)
                if field is None:
                    continue
                span = self._span(rp, measurement, field, MIN_NS,
                                  2 ** 63 - 1)
                if span is not None and (first is None or span[0] < first):
                    first = span[0]
        return first


class Rebalance:
    def __init__(self, conf, placements: PlacementMap,
                 writer: InfluxWriter, checkpoint: str) -> None:
        self.conf = conf
        self.placements = placements
        self.writer = writer
        self.settle = conf.settle_seconds
        self.checkpoint = Checkpoint(checkpoint, identity={
            'rebalance': placements.database_for('<tenant>'),
            'unit': conf.migrate_time_unit})
        self._lock = threading.Lock()
        self._marked: set = set()
        self.progress: Optional[Progress] = None

    # -- find --------------------------------------------------------------
    def servers(self) -> list[Server]:
        return sorted(set(self.placements.servers.values()),
                      key=lambda s: s.url)

    def databases(self, server: Server) -> list[str]:
        result = self.writer.run(server, 'SHOW DATABASES')[0]
        return [row[0] for s in result.get('series') or ()
                for row in s.get('values') or ()]

    def find(self) -> tuple[list[MoveJob], list[str]]:
        """The moves, and the servers that could not be asked."""
        jobs, unreachable = [], []
        for server in self.servers():
            try:
                names = self.databases(server)
            except WriteFailed as exc:
                unreachable.append('%s: %s' % (server.url, exc))
                continue
            for database in names:
                tenant = self.placements.tenant_of(database)
                if tenant is None:
                    continue
                placement = self.placements.place(tenant)
                if server not in placement.servers:
                    # To each replica: the old copy is dropped only once
                    # every one of them holds it (see run()).
                    jobs.extend(MoveJob(tenant, database, server, copy)
                                for copy in placement.copies)
        return jobs, unreachable

    # -- markers -----------------------------------------------------------
    def _markers(self, server: Server) -> dict:
        result = self.writer.run(server, moves.SELECT_MARKERS)[0]
        if 'not found' in result.get('error', ''):
            return {}  # no move recorded on that server yet
        return {(m.tenant_id, m.source): m
                for m in moves.parse_markers(result)}

    def mark(self, job: MoveJob, state: str, split: int) -> None:
        server = job.placement.server
        with self._lock:
            if server not in self._marked:
                self.writer.run(server, 'CREATE DATABASE %s'
                                % quote_ident(moves.DATABASE))
                self._marked.add(server)
        line = moves.marker_line(moves.Move(job.tenant_id, job.source.url,
                                            split, state))
        try:
            response = self.writer.session(server).post(
                server.url + '/write', params={'db': moves.DATABASE,
                                               'precision': 'ns'},
                data=line.encode('utf-8'), timeout=30)
        except requests.RequestException as exc:
            raise WriteFailed('recording the move of %s on %s: %s' % (
                job.tenant_id, server.url, exc)) from None
        if response.status_code != 204:
            raise WriteFailed('recording the move of %s on %s: HTTP %d %s'
                              % (job.tenant_id, server.url,
                                 response.status_code, response.text[:300]))

    def split_of(self, job: MoveJob, markers: dict) -> int:
        """Where reads divide: the marker's, or the oldest point the new
        server holds now (what the persister wrote there since the map
        changed), or now."""
        known = markers.get((job.tenant_id, job.source.url))
        if known is not None:
            return known.split
        target = MovePlanner(lambda q: self.writer.run(job.placement.server,
                                                       q),
                             self.placements, job)
        # Raw points only: a tier's first period starts before the first
        # point it summarises, and the old server holds the points between.
        raw = job.placement.retention
        try:
            first = target.earliest([raw.name if raw else 'autogen'])
        except RuntimeError as exc:
            if 'not found' not in str(exc):  # no database or policy yet
                raise
            first = None
        return first if first is not None else time.time_ns()

    # -- one move ----------------------------------------------------------
    def planner(self, job: MoveJob) -> MovePlanner:
        return MovePlanner(lambda q: self.writer.run(job.source, q),
                           self.placements, job,
                           unit=self.conf.migrate_time_unit,
                           chunk_points=self.conf.chunk_points)

    def move(self, job: MoveJob) -> Optional[str]:
        """Copy and verify one move; None when verified, else why not."""
        why = identity.distinct(self.writer, job.source, job.placement.server)
        if why is not None:
            return 'not moved: %s' % why
        planner = self.planner(job)
        why = self._kept_policies(planner, job)
        if why is not None:
            return 'not moved: %s' % why
        plan = planner.build(self.checkpoint.load())
        if plan.refused_tenants or plan.untagged:
            return 'not moved: %s' % '; '.join(
                list(plan.refused_tenants.values()) +
                ['points without a tenant tag in %r' % m
                 for m in sorted(set(plan.untagged))])
        if job.placement.replicas:
            # A replica may hold it all already (another copy of the same
            # points): counted first, copied only where it is short.
            report = verify(planner,
                            lambda p, q: self.writer.run(p.server, q))
            if not report.mismatches:
                return None
            plan = planner.build(self.checkpoint.load(), force=report.repair)
        for _ in range(REPAIR_ROUNDS + 1):
            copier = Copier(self.writer, self.placements, job.source,
                            self.checkpoint, workers=1,
                            chunk_points=self.conf.chunk_points)
            copier.run(plan, _Share(self.progress))
            if copier.failures:
                return 'copy failed: %s' % copier.failures[0][1][:300]
            report = verify(planner,
                            lambda p, q: self.writer.run(p.server, q))
            if not report.mismatches:
                return None
            for line in missing_lines(report):
                LOG.warning('%s: copying it again', line)
            for placement, _ in report.missing:
                self.writer.schema.forget(placement)
            plan = planner.build(self.checkpoint.load(), force=report.repair)
        m = report.mismatches[0]
        return ('verification failed: %d pair(s) short, first %s policy %s: '
                'source %d, target %d' % (len(report.mismatches),
                                          m.measurement, m.target_policy,
                                          m.source, m.target))

    def _kept_policies(self, planner: MovePlanner,
                       job: MoveJob) -> Optional[str]:
        """Make, on the new server, a policy of the same name and duration
        for each source policy the placement does not know; why not, when
        the new database already has one that differs or that name is its
        raw policy."""
        kept = planner.kept_policies()
        if not kept:
            return None
        placement = job.placement
        self.writer.ensure([placement])
        result = self.writer.run(placement.server, 'SHOW RETENTION POLICIES '
                                 'ON %s' % quote_ident(placement.database))[0]
        if 'error' in result:
            return 'reading the policies of %s on %s: %s' % (
                placement.database, placement.server.url, result['error'])
        rows = [dict(zip(s['columns'], v)) for s in result.get('series') or ()
                for v in s.get('values') or ()]
        there = {row['name']: row for row in rows}
        for row in kept:
            name = row['name']
            have = there.get(name)
            if have is not None and have.get('default'):
                return ('policy %s of the old copy is not in the placement, '
                        'and its name is the new database\'s default (raw) '
                        'policy: its points would become raw data'
                        % quote_ident(name))
            if have is not None:
                if duration_hours(have['duration']) != \
                        duration_hours(row['duration']):
                    return ('policy %s keeps %s in the old copy but %s on %s'
                            % (quote_ident(name), row['duration'],
                               have['duration'], placement.server.url))
                continue
            statement = 'CREATE RETENTION POLICY %s ON %s DURATION %s ' \
                'REPLICATION 1 SHARD DURATION %s' % (
                    quote_ident(name), quote_ident(placement.database),
                    _seconds(row['duration']),
                    _seconds(row['shardGroupDuration']))
            created = self.writer.run(placement.server, statement)[0]
            if 'error' in created:
                return '%s: %s' % (statement, created['error'])
            LOG.warning('policy %s of %s is not in the placement of tenant '
                        '%s: kept as it is (%s) on %s', name, job.database,
                        job.tenant_id, row['duration'], placement.server.url)
        return None

    def drop(self, job: MoveJob) -> Optional[str]:
        """Drop the verified source unless it changed since; None when
        dropped, else why not."""
        why = identity.distinct(self.writer, job.source, job.placement.server)
        if why is not None:
            return 'not dropped: %s' % why
        planner = self.planner(job)
        changed = planner.build(self.checkpoint.load())
        if changed.chunks:
            return ('not dropped: the source holds %d point(s) not copied '
                    'yet (does a persister still write there with the old '
                    'map?); run --rebalance again' % changed.points)
        result = self.writer.run(job.source, 'DROP DATABASE %s'
                                 % quote_ident(job.database))[0]
        if 'error' in result:
            return 'not dropped: %s' % result['error']
        LOG.info('dropped %s on %s: moved to %s', job.database,
                 job.source.url, job.placement.server.url)
        return None

    # -- the run -----------------------------------------------------------
    def run(self) -> int:
        c = self.conf
        jobs, unreachable = self.find()
        for text in unreachable:
            print('cannot look for tenant databases on %s' % text)
        lines = ['rebalance: %d tenant database(s) on a server other than '
                 'their placement' % len(jobs)]
        lines += ['  move %s' % job for job in jobs]
        for line in lines:
            LOG.info(line)
        print('\n'.join(lines))
        if c.dry_run or not jobs:
            return 1 if unreachable else 0
        self.checkpoint.acquire()
        if c.restart:
            self.checkpoint.reset()
        failed: dict[MoveJob, str] = {}
        markers: dict = {}
        down: dict[Server, str] = {}
        for server in {job.placement.server for job in jobs}:
            try:
                markers.update(self._markers(server))
            except WriteFailed as exc:  # that server's moves wait
                down[server] = str(exc)
        splits: dict[MoveJob, int] = {}
        for job in jobs:
            if job.placement.server in down:
                failed[job] = 'not started: %s' % down[job.placement.server]
                continue
            try:
                splits[job] = self.split_of(job, markers)
                self.mark(job, moves.COPYING, splits[job])
            except (WriteFailed, RuntimeError) as exc:
                failed[job] = 'not started: %s' % exc
        self._wait('the markers')
        started = [job for job in jobs if job not in failed]
        self.progress = Progress(0, len(started), bar=c.progress_bar)
        try:
            with concurrent.futures.ThreadPoolExecutor(c.workers) as pool:
                for job, why in zip(started, pool.map(self._guarded,
                                                      started)):
                    self.progress.advance(0, 1)
                    if why is not None:
                        failed[job] = why
        finally:
            self.progress.close()
        verified = [job for job in started if job not in failed]
        for job in list(verified):
            try:
                self.mark(job, moves.VERIFIED, splits[job])
            except WriteFailed as exc:
                failed[job] = 'verified, but not recorded: %s' % exc
                verified.remove(job)
        dropped = 0
        if c.drop_source and verified:
            self._wait('the verified markers')
            # An old copy is dropped once, and only when its moves to every
            # replica are verified.
            sources: dict = {}
            for job in jobs:
                sources.setdefault((job.tenant_id, job.source), []).append(job)
            for group in sources.values():
                if any(job not in verified for job in group):
                    continue
                why = self.drop(group[0])
                if why is None:
                    dropped += 1
                else:
                    failed[group[0]] = why
        self.checkpoint.close()
        summary = ('rebalance: %d of %d move(s) verified%s; %d failed' % (
            len(verified), len(jobs), ', %d source(s) dropped' % dropped
            if c.drop_source else ' (sources kept: --drop-source drops '
            'them)', len(failed)))
        LOG.info(summary)
        print(summary)
        for job, why in sorted(failed.items(), key=lambda kv: str(kv[0])):
            print('failed %s: %s' % (job, why))
            LOG.error('failed %s: %s', job, why)
        if failed:
            print('run the same command again to retry what failed')
        return 1 if failed or unreachable else 0

    def _guarded(self, job: MoveJob) -> Optional[str]:
        try:
            return self.move(job)
        except (WriteFailed, RuntimeError) as exc:
            return str(exc)[:500]

    def _wait(self, what: str) -> None:
        if self.settle > 0:
            LOG.info('waiting %.0f s for the readers to see %s',
                     self.settle, what)
            time.sleep(self.settle)


def _seconds(duration: str) -> str:
    """InfluxDB's ``168h0m0s`` as an InfluxQL duration (``0s``: INF)."""
    hours = duration_hours(duration)
    return 'INF' if hours is None else '%ds' % round(hours * 3600)


class _Share:
    """One move's progress, added to the run's."""

    def __init__(self, progress: Optional[Progress]) -> None:
        self._progress = progress

    def advance(self, points: int, chunks: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(points, 0)

    def close(self) -> None:
        pass
