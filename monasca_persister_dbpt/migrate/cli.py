"""``monasca-persister-dbpt-migrate``: shared database -> one per tenant.

Takes upstream's command line (``migrate-to-db-per-tenant.py``) as it is,
reads the persister's own config file, logs to the log file configured
there, and adds what a long job needs: a dry run, parallel workers, a
checkpoint to resume from, progress, and verification.
"""

from __future__ import annotations

import datetime
import logging
import re
import sys
from typing import Optional

from oslo_config import cfg
from oslo_log import log

from monasca_persister_dbpt import conf as dbpt_conf
from monasca_persister_dbpt.influx.influxql import quote_ident
from monasca_persister_dbpt.influx.writer import InfluxWriter
from monasca_persister_dbpt.migrate.checkpoint import Checkpoint
from monasca_persister_dbpt.migrate.copy import Copier, Progress
from monasca_persister_dbpt.migrate.plan import MAX_NS, NS, Planner
from monasca_persister_dbpt.migrate.verify import verify
from monasca_persister_dbpt.placement import InvalidDuration
from monasca_persister_dbpt.placement import PlacementMap, parse_overrides

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
    cfg.ListOpt('migrate-skip-regex', default=[],
                help='Skip measurements matching any of these regular '
                     'expressions (comma separated, matched from the start).'),
    # Ours.
    cfg.BoolOpt('dry-run', default=False,
                help='Print the plan (measurements, tenants, chunks, points, '
                     'databases and policies to create) and write nothing.'),
    cfg.IntOpt('workers', default=2,
               help='Chunks copied in parallel (1 to 64).'),
    cfg.BoolOpt('verify', default=False,
                help='After copying, compare point counts per measurement '
                     'and tenant; exit 1 if any target has fewer.'),
    cfg.BoolOpt('verify-only', default=False,
                help='Only verify; copy nothing.'),
    cfg.StrOpt('checkpoint', default='migrate-checkpoint.jsonl',
               help='File recording finished chunks; a re-run resumes from '
                    'it and a later run copies only the delta.'),
    cfg.BoolOpt('restart', default=False,
                help='Start over: forget the checkpoint first.'),
    cfg.IntOpt('chunk-points', default=1000000,
               help='Most points one SELECT INTO copies (a time unit is '
                    'never split).'),
    cfg.BoolOpt('progress-bar', default=None,
                help='Progress bar (default: when stderr is a terminal; '
                     'otherwise a log line every 10 s).'),
]


class UsageError(ValueError):
    pass


def _validate(c) -> tuple[dict, list]:
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
    if not 1 <= c.workers <= 64:
        raise UsageError('--workers %d: use 1 to 64' % c.workers)
    if c.chunk_points < 1:
        raise UsageError('--chunk-points %d: must be positive'
                         % c.chunk_points)
    try:
        overrides = parse_overrides(c.migrate_retention_policy,
                                    bare_unit=c.migrate_time_unit)
    except InvalidDuration as exc:
        raise UsageError('--migrate-retention-policy: %s' % exc) from None
    skip = []
    for pattern in c.migrate_skip_regex:
        try:
            skip.append(re.compile(pattern))
        except re.error as exc:
            raise UsageError('--migrate-skip-regex %r: %s'
                             % (pattern, exc)) from None
    return overrides, skip


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


def main(argv: Optional[list] = None) -> int:
    conf = cfg.ConfigOpts()
    dbpt_conf.register_opts(conf)
    conf.register_cli_opts(cli_opts)
    log.register_options(conf)
    conf(argv if argv is not None else sys.argv[1:],
         project='monasca', prog='monasca-persister-dbpt-migrate',
         default_config_files=cfg.find_config_files(
             project='monasca', prog='monasca-persister'),
         description='Move a shared Monasca InfluxDB database into one '
                     'database per tenant.')
    log.setup(conf, 'monasca-persister-dbpt-migrate')
    try:
        overrides, skip = _validate(conf)
        placements = _placements(conf, overrides)
    except (UsageError, InvalidDuration, ValueError) as exc:
        print('monasca-persister-dbpt-migrate: error: %s' % exc,
              file=sys.stderr)
        return 2
    return Migration(conf, placements, skip).run()


class Migration:
    def __init__(self, conf, placements: PlacementMap, skip) -> None:
        self.conf = conf
        self.placements = placements
        self.source = conf.influxdb.database_name
        self.server = placements.default_server
        self.writer = InfluxWriter(
            concurrency=1, request_timeout=max(conf.dbpt.request_timeout,
                                               600.0),
            retry_timeout=conf.dbpt.retry_timeout,
            backoff_max=conf.dbpt.retry_backoff_max)
        self.checkpoint = Checkpoint(conf.checkpoint)
        self.planner = Planner(
            lambda q: self.writer.run(self.server, q), placements,
            self.source, unit=conf.migrate_time_unit,
            start_offset=conf.migrate_start_time_offset,
            end_offset=conf.migrate_end_time_offset, skip=skip,
            chunk_points=conf.chunk_points, workers=conf.workers)

    def run(self) -> int:
        c = self.conf
        existing = {r[0] for s in self.writer.run(
            self.server, 'SHOW DATABASES')[0].get('series', [])
            for r in s.get('values') or []}
        if self.source not in existing:
            print('monasca-persister-dbpt-migrate: error: source database %s '
                  'not found on %s' % (quote_ident(self.source),
                                       self.server.url), file=sys.stderr)
            return 2
        LOG.info('migrating %s on %s, points from %s to %s', self.source,
                 self.server.url, _time(self.planner.lower),
                 _time(self.planner.upper))
        if c.verify_only:
            return self._verify()
        if c.restart and not c.dry_run:
            self.checkpoint.reset()
        plan = self.planner.build(self.checkpoint.load())
        self._report_plan(plan, existing)
        if c.dry_run:
            return 0
        progress = Progress(plan.points, len(plan.chunks),
                            bar=c.progress_bar)
        copier = Copier(self.writer, self.placements, self.server,
                        self.checkpoint, workers=c.workers,
                        chunk_points=c.chunk_points)
        try:
            copier.run(plan, progress)
        finally:
            progress.close()
            self.checkpoint.close()
        summary = ('copied %d points in %d chunks into %d databases; %d '
                   'chunks failed' % (copier.written, len(plan.chunks),
                                      len(plan.placements()),
                                      len(copier.failures)))
        LOG.info(summary)
        print(summary)
        reasons: dict = {}
        for chunk, reason in copier.failures:
            reasons.setdefault(chunk.tenant_id if chunk else None, reason)
        for tenant, reason in reasons.items():
            print('failed%s: %s' % (' for tenant %s' % tenant if tenant
                                    else '', reason[:500]))
        if reasons:
            print('run the same command again to copy what failed')
        status = 1 if copier.failures else 0
        if c.verify:
            status = max(status, self._verify())
        return status

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

    def _verify(self) -> int:
        report = verify(self.planner,
                        lambda p, q: self.writer.run(p.server, q))
        print('verified %d measurement/tenant pairs: %d points in the '
              'source range, %d in the targets' % (
                  report.checked, report.source_points,
                  report.target_points))
        for m in report.mismatches:
            line = ('MISMATCH %s tenant %s in %s policy %s: source %d, target '
                    '%d' % (m.measurement, m.tenant_id, m.database,
                            m.target_policy, m.source, m.target))
            LOG.error(line)
            print(line)
        if report.extra:
            print('%d pair(s) hold more in the target than in the source '
                  '(written there directly by the persister): not an error'
                  % len(report.extra))
        return 1 if report.mismatches else 0


if __name__ == '__main__':
    sys.exit(main())
