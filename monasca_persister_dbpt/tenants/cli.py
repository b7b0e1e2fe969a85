"""``monasca-persister-dbpt-tenants``: tenants as an operator manages them.

A cliff application, as the openstack client is: each subcommand is an
entry point in the ``monasca_persister_dbpt.tenants`` namespace, and every
listing takes ``-f table|csv|json|value|yaml``. It reads the persister's
own config file (``--config-file``, default as the persister's) and asks
the same placement package as the persister, the migration and the read
driver.

Exit status: 0 done; 1 something could not be done (a server that did not
answer, a tenant with no database, a copy that remains, an import short of
points); 2 bad input (an invalid tenant id or option, a file that is not a
whole export of ours, a drop without ``--yes``), with nothing changed.
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
from typing import Optional

from cliff.app import App
from cliff.command import Command
from cliff.commandmanager import CommandManager
from cliff.lister import Lister
from cliff.show import ShowOne
from oslo_config import cfg

from monasca_persister_dbpt import conf as dbpt_conf
from monasca_persister_dbpt.influx.writer import InfluxWriter, WriteFailed
from monasca_persister_dbpt.limits.exposition import read_refusals
from monasca_persister_dbpt.migrate.plan import MAX_NS, MIN_NS
from monasca_persister_dbpt.placement import InvalidTenantId, PlacementMap
from monasca_persister_dbpt.tenants.archive import Archive, ArchiveError
from monasca_persister_dbpt.tenants.archive import Export, Import
from monasca_persister_dbpt.tenants.inventory import Inventory
from monasca_persister_dbpt.tenants.removal import Removal, describe
from monasca_persister_dbpt.tenants.removal import read_projects
from monasca_persister_dbpt.tenants.removal import settle_seconds

PROG = 'monasca-persister-dbpt-tenants'
NAMESPACE = 'monasca_persister_dbpt.tenants'
#: Seconds a server that does not answer is retried before it is reported.
ASK_FOR = 10.0

LOG = logging.getLogger(__name__)


class Failed(Exception):
    """What stops a command; ``code`` is its exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _time(text: Optional[str], option: str, default: int) -> int:
    """ISO 8601 (a date, or a time; UTC unless it says otherwise) -> ns."""
    if text is None:
        return default
    try:
        moment = datetime.datetime.fromisoformat(text.strip().replace(
            'Z', '+00:00'))
    except ValueError:
        raise Failed('%s %r is not an ISO 8601 date or time (e.g. '
                     '2026-01-31 or 2026-01-31T12:00:00Z)' % (option, text),
                     2) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return int(moment.timestamp()) * 10 ** 9 + moment.microsecond * 1000


def _iso(ns: Optional[int]) -> str:
    if ns is None:
        return ''
    return datetime.datetime.fromtimestamp(
        ns / 1e9, datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


class TenantsApp(App):
    def __init__(self) -> None:
        super().__init__(
            description='Tenants of monasca-persister-dbpt: inventory, '
                        'export and import, drop, orphans.',
            version=_version(),
            command_manager=CommandManager(NAMESPACE),
            deferred_help=True)
        self.conf: Optional[cfg.ConfigOpts] = None
        self._placements: Optional[PlacementMap] = None
        self._writer: Optional[InfluxWriter] = None

    def build_option_parser(self, description, version, argparse_kwargs=None):
        parser = super().build_option_parser(description, version,
                                             argparse_kwargs)
        parser.add_argument(
            '--config-file', action='append', default=[],
            metavar='PATH', help='The persister\'s config file (repeatable; '
            'default: as monasca-persister finds its own).')
        return parser

    def initialize_app(self, argv) -> None:
        conf = cfg.ConfigOpts()
        dbpt_conf.register_opts(conf)
        files = self.options.config_file or cfg.find_config_files(
            project='monasca', prog='monasca-persister')
        try:
            for path in files:
                if not os.path.isfile(path):
                    raise ValueError('--config-file %s: no such file' % path)
            conf([], project='monasca', prog=PROG,
                 default_config_files=files)
            dbpt_conf.check(conf)
        except (cfg.Error, ValueError) as exc:
            # Not an Exception: cliff would make any of those exit 1.
            print('%s: error: %s' % (PROG, exc), file=sys.stderr)
            raise SystemExit(2) from None
        self.conf = conf

    def run(self, argv) -> int:
        try:
            return super().run(argv or ['--help'])
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else 2

    @property
    def placements(self) -> PlacementMap:
        if self._placements is None:
            try:
                self._placements = PlacementMap.from_conf(self.conf)
            except ValueError as exc:
                raise Failed(str(exc), 2) from None
        return self._placements

    @property
    def writer(self) -> InfluxWriter:
        if self._writer is None:
            dbpt = self.conf.dbpt
            self._writer = InfluxWriter(
                concurrency=4, request_timeout=max(dbpt.request_timeout, 600),
                retry_timeout=min(dbpt.retry_timeout, ASK_FOR),
                backoff_max=dbpt.retry_backoff_max)
        return self._writer


def _version() -> str:
    try:
        from importlib.metadata import version
        return version('monasca-persister-dbpt')
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return 'unknown'


class _Base(Command):
    """What every subcommand shares: the mapping, the servers, the exit
    status of a :class:`Failed`."""

    #: Servers that did not answer this command: it exits 1 after saying
    #: what it could.
    unreachable: list = []

    def run(self, parsed_args) -> int:
        try:
            return super().run(parsed_args) or (1 if self.unreachable
                                                else 0)
        except Failed as exc:
            print('%s: error: %s' % (PROG, exc), file=sys.stderr)
            return exc.code
        except (WriteFailed, OSError) as exc:
            print('%s: error: %s' % (PROG, exc), file=sys.stderr)
            return 1

    @property
    def placements(self) -> PlacementMap:
        return self.app.placements

    @property
    def inventory(self) -> Inventory:
        return Inventory(self.placements, self.app.writer)

    def say(self, text: str) -> None:
        self.app.stdout.write(text + '\n')
        self.app.stdout.flush()

    def tenant(self, tenant_id: str) -> str:
        try:
            self.placements.validate(tenant_id)
            self.placements.tenants.checked_database(tenant_id)
        except InvalidTenantId as exc:
            raise Failed(str(exc), 2) from None
        return tenant_id

    def scan(self, tenants=None, details=True, strict=True):
        scan = self.inventory.scan(tenants, details)
        self.unreachable = scan.unreachable
        for why in scan.unreachable:
            print('%s: server %s' % (PROG, why), file=sys.stderr)
        if scan.unreachable and strict:
            raise Failed('%d server(s) did not answer: nothing changed, '
                         'since they may hold a copy' % len(scan.unreachable))
        return scan

    def found(self, tenant_id: str, strict: bool = False):
        """The tenant's copies; *strict*: every server must answer (a
        drop), else those that answered are enough (show, export)."""
        scan = self.scan({tenant_id}, strict=strict)
        entry = scan.tenants.get(tenant_id)
        if entry is None:
            raise Failed('tenant %s has no database (%s) on any configured '
                         'server%s (%s)' % (
                             tenant_id,
                             self.placements.database_for(tenant_id),
                             ' that answered' if scan.unreachable else '',
                             ', '.join(self.inventory.servers())))
        return entry

    def limits(self, tenant_id: str) -> str:
        own = self.placements.tenant_overrides.settings_of(tenant_id)
        return ' '.join('%s=%s' % (k, str(v).lower() if isinstance(v, bool)
                                   else v) for k, v in sorted(own.items()))

    def placed(self, tenant_id: str) -> str:
        overrides = self.placements.tenant_overrides
        servers = self.placements.replicas_for(tenant_id)
        names = [name for s in servers for name, server in
                 sorted(self.placements.servers.items()) if server == s][:
                     len(servers)]
        how = 'pinned' if overrides.servers_of(tenant_id) is not None else \
            'hashed' if self.placements.server_map.weights else 'default'
        return '%s (%s)' % (','.join(dict.fromkeys(names)), how)


#: The columns of ``list`` and ``orphans``.
COLUMNS = ('Tenant', 'Database', 'Server', 'Other copies', 'Policies',
           'Series', 'Disk bytes', 'Newest point', 'Limits', 'Refused')


class _Listing(_Base, Lister):
    def rows(self, entries, refusals: Optional[dict] = None) -> list:
        rows = []
        for entry in entries:
            placed = [c for c in entry.copies if c.placed]
            first = (placed or entry.copies)[0]
            refused = (refusals or {}).get(entry.tenant_id, {})
            rows.append((
                entry.tenant_id, entry.database,
                ','.join(c.server_name for c in placed),
                ','.join(c.server_name for c in entry.copies
                         if not c.placed),
                ' '.join(str(p) for p in first.policies), first.series,
                first.disk_bytes, _iso(first.newest),
                self.limits(entry.tenant_id),
                ' '.join('%s=%d' % kv for kv in sorted(refused.items()))))
        return rows

    @staticmethod
    def refusals(source: Optional[str]) -> Optional[dict]:
        if not source:
            return None
        try:
            return read_refusals(source)
        except (OSError, ValueError) as exc:
            raise Failed('--refusals %s: %s' % (source, exc), 2) from None


class ListTenants(_Listing):
    """Every tenant database on every configured server, with its size."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument(
            '--refusals', metavar='SOURCE',
            help='Add refusals by reason from the persister\'s exposition: '
                 'its http(s) address, [dbpt] prometheus_textfile_dir, a '
                 '.prom file or [dbpt] stats_file.')
        return parser

    def take_action(self, parsed_args):
        refusals = self.refusals(parsed_args.refusals)
        scan = self.scan(strict=False)
        return COLUMNS, self.rows(scan.tenants.values(), refusals)


class ShowTenant(_Base, ShowOne):
    """One tenant: every copy, its measurements, where it belongs."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument('tenant', help='The tenant (project) id.')
        parser.add_argument('--refusals', metavar='SOURCE',
                            help='As for list.')
        return parser

    def take_action(self, parsed_args):
        tenant_id = self.tenant(parsed_args.tenant)
        refusals = _Listing.refusals(parsed_args.refusals) or {}
        entry = self.found(tenant_id)
        copies = []
        measurements = set()
        for copy in entry.copies:
            measurements.update(self.inventory.measurements(copy))
            copies.append('%s %s %s: policies %s; %s series; %s bytes; '
                          'newest %s' % (
                              copy.server_name, copy.server.url,
                              'placed' if copy.placed else 'leftover',
                              ' '.join(str(p) for p in copy.policies),
                              copy.series, copy.disk_bytes,
                              _iso(copy.newest) or '-'))
        refused = refusals.get(tenant_id, {})
        return (('Tenant', 'Database', 'Placement', 'Copies', 'Measurements',
                 'Limits', 'Refused'),
                (tenant_id, entry.database, self.placed(tenant_id),
                 '\n'.join(copies), '\n'.join(sorted(measurements)),
                 self.limits(tenant_id),
                 ' '.join('%s=%d' % kv for kv in sorted(refused.items()))))


class ExportTenant(_Base):
    """A tenant's points, every policy, as gzip line protocol."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument('tenant', help='The tenant (project) id.')
        parser.add_argument('--out', required=True, metavar='FILE',
                            help='The file to write (gzip).')
        parser.add_argument('--start', metavar='TIME',
                            help='Oldest point (ISO 8601; default: all).')
        parser.add_argument('--end', metavar='TIME',
                            help='Newest point (ISO 8601; default: all).')
        return parser

    def take_action(self, parsed_args):
        tenant_id = self.tenant(parsed_args.tenant)
        export(self, tenant_id, parsed_args.out,
               _time(parsed_args.start, '--start', MIN_NS),
               _time(parsed_args.end, '--end', MAX_NS))
        return 0


def export(command: _Base, tenant_id: str, path: str, start: int = MIN_NS,
           end: int = MAX_NS) -> int:
    if start > end:
        raise Failed('--start is after --end: nothing to export', 2)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise Failed('--out %s: folder %s does not exist' % (path, folder), 2)
    entry = command.found(tenant_id)
    copy = next((c for c in entry.copies if c.placed), entry.copies[0])
    exporter = Export(command.inventory, copy, tenant_id, start, end)
    try:
        points = exporter.write(path)
    except BaseException:
        if os.path.exists(path + '.partial'):
            os.unlink(path + '.partial')
        raise
    command.say('exported %d point(s) of tenant %s from %s on %s (%s) to %s'
                % (points, tenant_id, copy.database, copy.server_name,
                   copy.server.url, path))
    return points


class ImportTenant(_Base):
    """Write an export back to its tenant's placement, verified."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument('file', help='A file written by export.')
        return parser

    def take_action(self, parsed_args):
        try:
            archive = Archive(parsed_args.file)
        except ArchiveError as exc:
            raise Failed('%s; nothing imported' % exc, 2) from None
        tenant_id = self.tenant(archive.tenant_id)
        placement = self.placements.place(tenant_id)
        if self.placements.tenant_overrides.settings_of(tenant_id).get(
                'blocked'):
            self.say('note: tenant %s is blocked in the overrides file: its '
                     'new points stay refused until blocked=true is removed'
                     % tenant_id)
        job = Import(archive, placement, self.app.writer)
        job.run()
        short = job.verify()
        for line in short:
            print('%s: short: %s' % (PROG, line), file=sys.stderr)
        if short:
            raise Failed('imported %s, but %d count(s) are short (see '
                         'above)' % (parsed_args.file, len(short)))
        self.say('imported %d point(s) of tenant %s into %s on %s; '
                 'verified by counts per policy, measurement and field' % (
                     archive.points, tenant_id, placement.database,
                     ', '.join(s.url for s in placement.servers)))
        return 0


class _Dropping(_Base):
    def add_drop_options(self, parser) -> None:
        parser.add_argument('--yes', action='store_true',
                            help='Drop; without it, only print what would '
                                 'be dropped (and exit 2).')
        parser.add_argument('--no-block', action='store_true',
                            help='Do not add blocked=true to the overrides '
                                 'file (late records may then create the '
                                 'database again).')
        parser.add_argument('--settle-seconds', type=float, default=None,
                            metavar='S',
                            help='Seconds between blocking and dropping, '
                                 'for every persister to read the block '
                                 '(default: 2 x the file\'s look interval '
                                 '+ [dbpt] max_delay; 0 with --no-block).')

    def check_block(self, parsed_args) -> None:
        if parsed_args.settle_seconds is not None and \
                parsed_args.settle_seconds < 0:
            raise Failed('--settle-seconds %g: must be 0 or more'
                         % parsed_args.settle_seconds, 2)
        if not parsed_args.no_block and \
                not self.placements.tenant_overrides.path:
            raise Failed('[dbpt] tenant_overrides_file is not set, so the '
                         'tenant cannot be blocked: set it (the persisters '
                         'read it without a restart once it is set) or pass '
                         '--no-block', 2)

    def drop(self, parsed_args, entries: dict) -> int:
        for entry in entries.values():
            for copy in entry.copies:
                self.say('will drop %s' % describe(entry, copy))
        if not parsed_args.yes:
            raise Failed('nothing dropped: add --yes to drop the above', 2)
        removal = Removal(self.placements, self.inventory, self.say)
        settle = 0.0
        if not parsed_args.no_block:
            changed = removal.block(sorted(entries))
            self.say('blocked %d tenant(s) in %s' % (
                len(entries), self.placements.tenant_overrides.path))
            settle = parsed_args.settle_seconds if \
                parsed_args.settle_seconds is not None else \
                settle_seconds(self.app.conf.dbpt.max_delay) if changed \
                else 0.0
        remaining = removal.drop(entries, settle)
        for line in remaining:
            print('%s: %s' % (PROG, line), file=sys.stderr)
        if remaining:
            raise Failed('%d copy(ies) remain (see above)' % len(remaining))
        return 0


class DropTenant(_Dropping):
    """Drop a tenant's database on every server that holds it."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument('tenant', help='The tenant (project) id.')
        parser.add_argument('--export', metavar='FILE',
                            help='Export the tenant to FILE first.')
        self.add_drop_options(parser)
        return parser

    def take_action(self, parsed_args):
        tenant_id = self.tenant(parsed_args.tenant)
        self.check_block(parsed_args)
        entry = self.found(tenant_id, strict=True)
        if parsed_args.export and parsed_args.yes:
            export(self, tenant_id, parsed_args.export)
        return self.drop(parsed_args, {tenant_id: entry})


class Orphans(_Dropping, _Listing):
    """Tenant databases whose project is not in a list of live ones."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument(
            '--projects', required=True, metavar='FILE',
            help='Live project ids, one a line, or - for standard input '
                 '(openstack project list -f value -c ID).')
        parser.add_argument('--drop', action='store_true',
                            help='Drop the orphans, as drop does.')
        self.add_drop_options(parser)
        return parser

    def take_action(self, parsed_args):
        source = parsed_args.projects
        try:
            if source == '-':
                projects = read_projects(sys.stdin, 'standard input')
            else:
                with open(source, encoding='utf-8') as handle:
                    projects = read_projects(handle, source)
        except (OSError, ValueError) as exc:
            raise Failed(str(exc) if isinstance(exc, ValueError) else
                         '--projects %s: %s' % (source, exc), 2) from None
        if parsed_args.drop:
            self.check_block(parsed_args)
        scan = self.scan(strict=parsed_args.drop)
        orphans = {t: e for t, e in scan.tenants.items()
                   if t not in projects}
        if parsed_args.drop and orphans:
            self.drop(parsed_args, orphans)
        return COLUMNS, self.rows(orphans.values())


def main(argv: Optional[list] = None) -> int:
    logging.getLogger('monasca_persister_dbpt').setLevel(logging.WARNING)
    return TenantsApp().run(sys.argv[1:] if argv is None else argv)


if __name__ == '__main__':  # pragma: no cover
    sys.exit(main())
