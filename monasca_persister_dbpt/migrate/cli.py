"""``monasca-persister-dbpt-migrate``: shared database -> one per tenant.

Takes upstream's command line (``migrate-to-db-per-tenant.py``) as it is,
reads the persister's own config file, logs to the log file configured
there, and adds what a long job needs: a dry run, parallel workers, a
checkpoint to resume from, progress, and verification.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import signal
import sys
import time
from typing import Optional

from oslo_config import cfg
from oslo_log import log

from monasca_persister_dbpt import conf as dbpt_conf
from monasca_persister_dbpt.influx import identity
from monasca_persister_dbpt.influx.influxql import quote_ident
from monasca_persister_dbpt.influx.schema import SchemaError
from monasca_persister_dbpt.influx.writer import InfluxWriter, WriteFailed
from monasca_persister_dbpt.limits import LimitsTable
from monasca_persister_dbpt.migrate.checkpoint import Checkpoint
from monasca_persister_dbpt.migrate.checkpoint import CheckpointError
from monasca_persister_dbpt.migrate.copy import Copier, Progress
from monasca_persister_dbpt.migrate.plan import MAX_NS, MIN_NS, NS, UNIT_NS
from monasca_persister_dbpt.migrate.plan import Planner
from monasca_persister_dbpt.migrate.rebalance import Rebalance
from monasca_persister_dbpt.migrate.repair import Repair
from monasca_persister_dbpt.migrate.verify import missing_lines, verify
from monasca_persister_dbpt.placement import InvalidDuration
from monasca_persister_dbpt.placement import InvalidTenantId
from monasca_persister_dbpt.placement import PlacementMap, parse_duration

#: Rounds of repair (copy again what verification found short) per run.
REPAIR_ROUNDS = 2
#: Seconds a dry run waits for InfluxDB before giving up.
DRY_RUN_WAIT = 5.0
#: Default checkpoints: the migration's, and a rebalance's (another
#: identity: one file cannot serve both).
CHECKPOINT = 'migrate-checkpoint.jsonl'
REBALANCE_CHECKPOINT = 'rebalance-checkpoint.jsonl'
REPAIR_CHECKPOINT = 'repair-checkpoint.jsonl'

LOG = logging.getLogger('monasca_persister_dbpt.migrate')

cli_opts = [
    # Upstream's options, same names and defaults.
    cfg.StrOpt('migrate-time-unit', default='w',
               help='Unit of the offsets and of planning: h, d or w.'),
    cfg.IntOpt('migrate-start-time-offset', default=0,
               help='Migrate points older than now minus this many units. '
                    '0 (default) also takes points stamped in the future.'),
    cfg.IntOpt('migrate-end-time-offset', default=520,
               help='Migrate points newer than now minus this many units '
                    '(default 520: ten years of weeks).'),
    cfg.StrOpt('migrate-retention-policy', default='',
               help='Per-project retention, "project:2w,project2:1d"; a bare '
                    'number is in --migrate-time-unit. Overrides [dbpt] '
                    'retention_overrides for the projects it names.'),
    cfg.MultiStrOpt('migrate-skip-regex', default=[],
                    help='Skip measurements matching any of these regular '
                         'expressions (matched from the start). Comma '
                         'separated as upstream\'s, or the flag repeated; a '
                         'comma inside {} or [] (a{1,3}) or escaped (\\,) '
                         'belongs to the expression.'),
    # Ours.
    cfg.BoolOpt('dry-run', default=False,
                help='Print the plan (measurements, tenants, chunks, points, '
                     'databases and policies to create) and write nothing.'),
    cfg.IntOpt('workers', default=2,
               help='Chunks copied in parallel (1 to 64).'),
    cfg.BoolOpt('verify', default=True,
                help='After copying, compare point counts per field, time '
                     'unit, measurement and tenant, copy again what is '
                     'short, and exit 1 if anything still is (the default).'),
    cfg.BoolOpt('no-verify', default=False,
                help='Skip the verification after copying (exit 0 then '
                     'only says that every copy statement succeeded).'),
    cfg.BoolOpt('verify-only', default=False,
                help='Only verify; copy nothing.'),
    cfg.StrOpt('checkpoint', default=CHECKPOINT,
               help='File recording finished chunks; a re-run resumes from '
                    'it and a later run copies only the delta.'),
    cfg.BoolOpt('restart', default=False,
                help='Start over: forget the checkpoint first.'),
    cfg.IntOpt('chunk-points', default=1000000,
               help='Most points one SELECT INTO copies (a time unit is '
                    'never split).'),
    cfg.BoolOpt('rebalance', default=False,
                help='Instead of migrating: move every tenant database that '
                     'lives on a server other than its placement (after a '
                     'server was added to [dbpt] hash_servers, say) to that '
                     'server, whole history and every policy, verified.'),
    cfg.BoolOpt('repair', default=False,
                help='Instead of migrating: with [dbpt] replicas, copy every '
                     'stale range a replica missed (a server down, a server '
                     'that came back empty) from a healthy replica of the '
                     'same tenant, verify it, and clear it. Exit 1 while '
                     'anything is still stale. With --dry-run: list them.'),
    cfg.BoolOpt('drop-source', default=False,
                help='With --rebalance: drop each old copy once its move is '
                     'verified and the old copy has not changed since.'),
    cfg.FloatOpt('settle-seconds', default=20.0,
                 help='With --rebalance: seconds to wait after recording the '
                      'moves (and again before dropping) so that every '
                      'monasca-api read driver has seen them (they look '
                      'every 10 s); 0 when no read driver reads these '
                      'servers.'),
    cfg.BoolOpt('progress-bar', default=None,
                help='Progress bar (default: when stderr is a terminal; '
                     'otherwise a log line every 10 s).'),
]


class UsageError(ValueError):
    pass


def split_patterns(text: str) -> list[str]:
    """Split on the commas that are not inside ``{}``, ``[]`` or escaped."""
    pieces, current, depth_brace, in_class, escaped = [], [], 0, False, False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
            continue
        if char == '\\':
            escaped = True
            current.append(char)
            continue
        if in_class:
            in_class = char != ']'
        elif char == '[':
            in_class = True
        elif char == '{':
            depth_brace += 1
        elif char == '}' and depth_brace:
            depth_brace -= 1
        elif char == ',' and not depth_brace:
            pieces.append(''.join(current))
            current = []
            continue
        current.append(char)
    pieces.append(''.join(current))
    return [p.replace('\\,', ',') for p in pieces if p]


def parse_retention(text: str, unit: str, placements: PlacementMap) -> dict:
    """``project:2w,project2:1d``; every project a valid tenant, once."""
    overrides = {}
    for part in (p.strip() for p in text.split(',')):
        if not part:
            continue
        tenant, sep, value = part.partition(':')
        tenant = tenant.strip()
        if not sep:
            raise UsageError('--migrate-retention-policy: %r is not '
                             'project:duration' % part)
        if not tenant:
            raise UsageError('--migrate-retention-policy: %r has no project'
                             % part)
        try:
            placements.validate(tenant)
        except InvalidTenantId as exc:
            raise UsageError('--migrate-retention-policy: %s' % exc) from None
        if tenant in overrides:
            raise UsageError('--migrate-retention-policy: project %s is given '
                             'twice' % tenant)
        try:
            overrides[tenant] = parse_duration(value, unit)
        except InvalidDuration as exc:
            raise UsageError('--migrate-retention-policy: project %s: %s'
                             % (tenant, exc)) from None
    return overrides


def _validate(c) -> list:
    if c.migrate_time_unit not in ('h', 'd', 'w'):
        raise UsageError('--migrate-time-unit %r: use h, d or w'
                         % c.migrate_time_unit)
    if c.migrate_start_time_offset < 0 or c.migrate_end_time_offset < 0:
        raise UsageError('offsets must not be negative (start %d, end %d)'
                         % (c.migrate_start_time_offset,
                            c.migrate_end_time_offset))
    if c.migrate_end_time_offset <= c.migrate_start_time_offset:
        raise UsageError('--migrate-end-time-offset %d is not after '
                         '--migrate-start-time-offset %d: the range is empty'
                         % (c.migrate_end_time_offset,
                            c.migrate_start_time_offset))
    if time.time_ns() - c.migrate_end_time_offset * \
            UNIT_NS[c.migrate_time_unit] < MIN_NS:
        raise UsageError('--migrate-end-time-offset %d%s reaches before 1677, '
                         'the earliest time InfluxDB stores'
                         % (c.migrate_end_time_offset, c.migrate_time_unit))
    if not 1 <= c.workers <= 64:
        raise UsageError('--workers %d: use 1 to 64' % c.workers)
    if c.chunk_points < 1:
        raise UsageError('--chunk-points %d: must be positive'
                         % c.chunk_points)
    if c.drop_source and not c.rebalance:
        raise UsageError('--drop-source needs --rebalance (the migration '
                         'never drops its source)')
    if c.repair and (c.rebalance or c.verify_only or c.no_verify):
        raise UsageError('--repair copies, verifies and clears stale ranges '
                         'on its own: drop --rebalance/--verify-only/'
                         '--no-verify')
    if c.rebalance and (c.verify_only or c.no_verify):
        raise UsageError('--rebalance always verifies every move: drop '
                         '--verify-only/--no-verify')
    if not 0 <= c.settle_seconds <= 3600:
        raise UsageError('--settle-seconds %s: use 0 to 3600'
                         % c.settle_seconds)
    skip = []
    for value in c.migrate_skip_regex:
        for pattern in split_patterns(value):
            try:
                skip.append(re.compile(pattern))
            except re.error as exc:
                raise UsageError('--migrate-skip-regex %r: %s (write a comma '
                                 'that belongs to the expression as \\,)'
                                 % (pattern, exc)) from None
    return skip


def _time(ns: int) -> str:
    if ns >= MAX_NS:
        return 'the end of time'
    return datetime.datetime.fromtimestamp(
        ns / NS, datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%SZ')


def _placements(conf, overrides) -> PlacementMap:
    if not conf.influxdb.db_per_tenant:
        LOG.info('[influxdb] db_per_tenant is False in the config file; the '
                 'migration targets per-tenant databases regardless')
    return PlacementMap.from_conf(conf, db_per_tenant=True,
                                  extra_overrides=overrides)


def _error(message: str, status: int) -> int:
    LOG.error(message)
    print('monasca-persister-dbpt-migrate: error: %s' % message,
          file=sys.stderr)
    return status


def main(argv: Optional[list] = None) -> int:
    conf = cfg.ConfigOpts()
    dbpt_conf.register_opts(conf)
    conf.register_cli_opts(cli_opts)
    log.register_options(conf)
    try:
        conf(argv if argv is not None else sys.argv[1:],
             project='monasca', prog='monasca-persister-dbpt-migrate',
             default_config_files=cfg.find_config_files(
                 project='monasca', prog='monasca-persister'),
             description='Move a shared Monasca InfluxDB database into one '
                         'database per tenant.')
    except cfg.Error as exc:
        print('monasca-persister-dbpt-migrate: error: %s' % exc,
              file=sys.stderr)
        return 2
    try:
        log.setup(conf, 'monasca-persister-dbpt-migrate')
    except (OSError, cfg.Error) as exc:
        print('monasca-persister-dbpt-migrate: error: cannot log as the '
              'config file says: %s' % exc, file=sys.stderr)
        return 2
    try:
        skip = _validate(conf)
        dbpt_conf.check(conf)
        probe = PlacementMap.from_conf(conf, db_per_tenant=True)
        overrides = parse_retention(conf.migrate_retention_policy,
                                    conf.migrate_time_unit, probe)
        placements = _placements(conf, overrides)
    except (UsageError, InvalidDuration, ValueError) as exc:
        print('monasca-persister-dbpt-migrate: error: %s' % exc,
              file=sys.stderr)
        return 2
    if not conf.influxdb.ip_address:
        print('monasca-persister-dbpt-migrate: note: the config file sets no '
              '[influxdb] ip_address; using %s' % placements.default_server.url,
              file=sys.stderr)
    writer = _writer(conf)
    try:
        # Before anything is read or written: one influxd under two names
        # would be copied onto itself (and, by a rebalance, dropped).
        identity.identify(writer, placements.servers,
                          create=not conf.dry_run,
                          retry_for=min(conf.dbpt.retry_timeout, 10.0))
    except identity.SameServer as exc:
        return _error(str(exc), 2)
    if conf.rebalance:
        return _rebalance(conf, placements, writer)
    if conf.repair:
        return _repair(conf, placements, writer)
    migration = Migration(conf, placements, skip, writer)
    try:
        return migration.run()
    except KeyboardInterrupt:
        return migration.interrupted()
    except CheckpointError as exc:
        return _error(str(exc), 2)
    except (WriteFailed, SchemaError, RuntimeError) as exc:
        return _error(str(exc), 1)


def _writer(conf) -> InfluxWriter:
    return InfluxWriter(
        concurrency=1, request_timeout=max(conf.dbpt.request_timeout, 600.0),
        retry_timeout=DRY_RUN_WAIT if conf.dry_run
        else conf.dbpt.retry_timeout,
        backoff_max=conf.dbpt.retry_backoff_max)


def _rebalance(conf, placements: PlacementMap, writer: InfluxWriter) -> int:
    rebalance = Rebalance(conf, placements, writer,
                          REBALANCE_CHECKPOINT if conf.checkpoint == CHECKPOINT
                          else conf.checkpoint)
    return _resumable(rebalance.run, rebalance.checkpoint,
                      'nothing is dropped before its move is verified')


def _repair(conf, placements: PlacementMap, writer: InfluxWriter) -> int:
    repair = Repair(conf, placements, writer,
                    REPAIR_CHECKPOINT if conf.checkpoint == CHECKPOINT
                    else conf.checkpoint)
    return _resumable(repair.run, repair.moves.checkpoint,
                      'a stale range is cleared only once its copy is '
                      'verified')


def _resumable(run, checkpoint: Checkpoint, promise: str) -> int:
    """A checkpointed run's exit status, interrupted or failing."""
    try:
        return run()
    except KeyboardInterrupt:
        checkpoint.close()
        print('\ninterrupted; %s: run the same command again to go on'
              % promise, file=sys.stderr)
        return 130
    except CheckpointError as exc:
        return _error(str(exc), 2)
    except (WriteFailed, SchemaError, RuntimeError) as exc:
        return _error(str(exc), 1)


class Migration:
    def __init__(self, conf, placements: PlacementMap, skip,
                 writer: Optional[InfluxWriter] = None) -> None:
        self.conf = conf
        self.placements = placements
        self.source = conf.influxdb.database_name
        self.server = placements.default_server
        self.writer = writer if writer is not None else _writer(conf)
        self.checkpoint = Checkpoint(conf.checkpoint, identity={
            'server': self.server.url, 'source': self.source,
            'target': placements.database_for('<tenant>'),
            'unit': conf.migrate_time_unit})
        self.planner = Planner(
            lambda q: self.writer.run(self.server, q), placements,
            self.source, unit=conf.migrate_time_unit,
            start_offset=conf.migrate_start_time_offset,
            end_offset=conf.migrate_end_time_offset, skip=skip,
            chunk_points=conf.chunk_points, workers=conf.workers)
        self.copier: Optional[Copier] = None
        #: The persister's limits: reported against, never applied here.
        self.limits = LimitsTable.from_group(conf.dbpt,
                                             placements.tenant_overrides)

    def interrupted(self) -> int:
        """Ctrl-C: stop taking chunks, keep the checkpoint, say how to
        resume; a second Ctrl-C ends the process at once."""
        signal.signal(signal.SIGINT, lambda *_: os._exit(130))
        if self.copier is not None:
            self.copier.stopping.set()
        self.checkpoint.close()
        left = self.copier.left if self.copier is not None else None
        print('\ninterrupted%s; the checkpoint %s keeps what is done: run '
              'the same command again to resume'
              % (': %d chunk(s) not copied' % left if left is not None
                 else ' before copying', self.conf.checkpoint),
              file=sys.stderr)
        LOG.warning('interrupted; resume by running the same command again')
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        # In-flight statements are abandoned: they are not checkpointed, so
        # the next run copies them again (an idempotent upsert).
        os._exit(130)

    def run(self) -> int:
        c = self.conf
        try:
            existing = {r[0] for s in self.writer.run(
                self.server, 'SHOW DATABASES')[0].get('series', [])
                for r in s.get('values') or []}
        except WriteFailed as exc:
            return _error('InfluxDB at %s does not answer: %s' % (
                self.server.url, str(exc).split(': ', 1)[-1][:300]), 1)
        if self.source not in existing:
            return _error('source database %s not found on %s' % (
                quote_ident(self.source), self.server.url), 2)
        LOG.info('migrating %s on %s, points from %s to %s', self.source,
                 self.server.url, _time(self.planner.lower),
                 _time(self.planner.upper))
        if c.verify_only:
            report = verify(self.planner,
                            lambda p, q: self.writer.run(p.server, q))
            for line in missing_lines(report):
                LOG.error(line)
                print(line)
            return self._verify_and_report(report)
        if not c.dry_run:
            self.checkpoint.acquire()
            if c.restart:
                self.checkpoint.reset()
        done = self.checkpoint.load()
        plan = self.planner.build(done)
        self._report_plan(plan, existing)
        if c.dry_run:
            return 0
        failures = self._copy(plan)
        report = None
        if not c.no_verify:
            for _ in range(REPAIR_ROUNDS + 1):
                # After a pass that copied all it planned, the checkpoint
                # tells points that arrived since from points lost.
                report = verify(self.planner,
                                lambda p, q: self.writer.run(p.server, q),
                                copied=None if failures
                                else self.checkpoint.load())
                for line in missing_lines(report):
                    LOG.error(line)
                    print(line)
                if not report.mismatches or failures:
                    break
                LOG.warning('verification: %d measurement/tenant pair(s) '
                            'short in the target; copying those units again',
                            len(report.mismatches))
                for placement, _ in report.missing:
                    self.writer.schema.forget(placement)
                repair = self.planner.build(self.checkpoint.load(),
                                            force=report.repair)
                failures = self._copy(repair)
        self.checkpoint.close()
        status = 1 if failures else 0
        if report is not None:
            status = max(status, self._verify_and_report(report))
        return status

    def _copy(self, plan) -> dict:
        c = self.conf
        progress = Progress(plan.points, len(plan.chunks),
                            bar=c.progress_bar)
        self.copier = copier = Copier(
            self.writer, self.placements, self.server, self.checkpoint,
            workers=c.workers, chunk_points=c.chunk_points)
        try:
            copier.run(plan, progress)
        finally:
            progress.close()
        summary = ('copied %d points in %d chunks into %d databases; %d '
                   'chunks failed' % (copier.written, len(plan.chunks),
                                      len(plan.placements()),
                                      len(copier.failures)))
        LOG.info(summary)
        print(summary)
        reasons: dict = {}
        for chunk, reason in copier.failures:
            reasons.setdefault(chunk.tenant_id if chunk else None, reason)
        for tenant, reason in sorted(reasons.items(),
                                     key=lambda kv: str(kv[0])):
            print('failed%s: %s' % (' for tenant %s' % tenant if tenant
                                    else '', reason[:500]))
        if reasons:
            print('run the same command again to copy what failed')
        return reasons

    def _report_plan(self, plan, existing) -> None:
        tenants = sorted({c.tenant_id for c in plan.chunks})
        measurements = sorted({c.measurement for c in plan.chunks})
        lines = [
            'plan for %s on %s (fixed at %s):' % (
                quote_ident(self.source), self.server.url,
                _time(plan.plan_time)),
            '  range: %s to %s, unit %s' % (
                _time(plan.lower), _time(plan.upper),
                self.conf.migrate_time_unit),
            '  %d measurement(s), %d tenant(s), %d chunk(s), ~%d point(s) '
            'to copy' % (len(measurements), len(tenants), len(plan.chunks),
                         plan.points),
        ]
        for p in sorted(plan.placements(), key=lambda p: p.database):
            if p.database in existing:
                continue
            rp = p.retention
            lines.append('  create database %s (%s%s)' % (
                quote_ident(p.database),
                'default policy %s, %s' % (rp.name, rp.duration) if rp
                else 'server default retention',
                ''.join('; tier %s kept %s' % (t.interval, t.policy.duration)
                        for t in p.tiers)))
        lines += self._series_caps(plan)
        for _, reason in sorted(plan.refused_tenants.items()):
            lines.append('  left in place, refused by the mapping: %s' %
                         reason)
        for measurement in sorted(set(plan.untagged)):
            lines.append('  left in place, points without a tenant tag in '
                         '%r' % measurement)
        if self.conf.dry_run:
            for c in plan.chunks:
                lines.append('  chunk %s.%s tenant %s [%s, %s) ~%d points -> '
                             '%s' % (c.source_rp, c.measurement, c.tenant_id,
                                     _time(c.start), _time(c.end), c.points,
                                     c.placement.database))
        for line in lines:
            LOG.info(line)
        print('\n'.join(lines))

    def _series_caps(self, plan) -> list[str]:
        """Tenants whose database would hold more series than their
        max_series: history is not a flood, so all of it is copied, but the
        persister will refuse their new series."""
        tags: dict = {}
        measurements: dict = {}
        for c in plan.chunks:
            tags.setdefault(c.placement, set()).add(c.tenant_tag)
            measurements.setdefault(c.placement, set()).add(c.measurement)
        lines = []
        for p, tenant_tags in sorted(tags.items(),
                                     key=lambda kv: kv[0].database):
            cap = self.limits(p.tenant_id).max_series
            if not cap:
                continue
            source = self.planner.series_of(p.tenant_id, tenant_tags,
                                            measurements[p])
            target = {row[0] for r in self.writer.run(
                p.server, 'SHOW SERIES ON %s' % quote_ident(p.database))
                if 'error' not in r for s in r.get('series', ())
                for row in s.get('values') or ()}
            total = len(source | target)
            if total > cap:
                lines.append(
                    '  over max_series: tenant %s will have %d series in %s '
                    '(%d from the source, %d there already), max_series is '
                    '%d; all of its history is copied (the migration '
                    'applies no limits), but the persister refuses its new '
                    'series while the database holds %d or more' % (
                        p.tenant_id, total, quote_ident(p.database),
                        len(source), len(target), cap, cap))
        return lines

    def _verify_and_report(self, report) -> int:
        print('verified %d measurement/tenant pairs: %d points in the '
              'source range, %d in the targets' % (
                  report.checked, report.source_points,
                  report.target_points))
        by_tenant: dict = {}
        for m in report.mismatches:
            line = ('MISMATCH %s tenant %s in %s policy %s: source %d, target '
                    '%d (%d unit(s) short, first %s)' % (
                        m.measurement, m.tenant_id, m.database,
                        m.target_policy, m.source, m.target, len(m.units),
                        _time(m.units[0][0]) if m.units else '-'))
            LOG.error(line)
            print(line)
            by_tenant.setdefault(m.tenant_id, []).append(m.measurement)
        for tenant, measurements in sorted(by_tenant.items()):
            print('missing for tenant %s: %s' % (
                tenant, ', '.join(sorted(set(measurements)))))
        if report.extra:
            print('%d pair(s) hold more in the target than in the source '
                  '(written there directly by the persister): not an error'
                  % len(report.extra))
        if report.arrived:
            tenants = sorted({m.tenant_id for m in report.arrived})
            line = ('%d point(s) reached the source after this pass counted '
                    'them (%d measurement/tenant pair(s), tenant(s) %s): '
                    'not copied yet, nothing copied is missing; the next '
                    'pass (the same command) copies them' % (
                        report.arrived_points, len(report.arrived),
                        ', '.join(tenants[:10]) +
                        (' and %d more' % (len(tenants) - 10)
                         if len(tenants) > 10 else '')))
            LOG.warning(line)
            print(line)
        return 1 if report.mismatches else 0


if __name__ == '__main__':
    sys.exit(main())
