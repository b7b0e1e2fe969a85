"""Where a tenant's data lives: server, database and retention policy.

The persister drivers and the migration tool both ask this module, and
nothing else decides. Tenant ids are validated here and never rewritten: an
id that cannot name its own database is refused, so its points can never land
in another tenant's database.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import string
import time
import urllib.parse
from typing import Mapping, Optional, Sequence

from oslo_config import cfg

# InfluxDB stores a database as a directory and rejects these outright; quotes
# and whitespace are refused too, since no Keystone project id carries them
# and they only ever come from a hostile or broken producer.
_FORBIDDEN = re.compile(r'[/\\"\'\s\x00-\x1f\x7f-\x9f]')
_MAX_NAME_BYTES = 255
_DURATION = re.compile(r'(\d+)([hdw]?)')
_UNIT_HOURS = {'h': 1, 'd': 24, 'w': 24 * 7}


LOG = logging.getLogger(__name__)
#: Placements cached per process (the cache is emptied when full; a miss
#: costs a validation and a string concatenation).
PLACEMENT_CACHE_MAX = 20000
#: Seconds between two looks at the tenant servers file.
SERVERS_FILE_CHECK = 10.0


class InvalidTenantId(ValueError):
    """A tenant id that must not be given a database."""


class InvalidDuration(ValueError):
    """A retention value that is not ``<N>h``, ``<N>d``, ``<N>w`` or ``inf``."""


class InvalidOption(ValueError):
    """An option value refused at start-up; the message names the option."""


#: Placeholders a database template may hold besides ``{tenant_id}``. Each
#: is fixed for the whole deployment, so the name stays a one-to-one
#: function of the tenant id.
TEMPLATE_PLACEHOLDERS = ('database_name',)
#: Databases no tenant is ever written to: InfluxDB's own, and (added per
#: mapping) the shared database the migration reads from.
RESERVED_DATABASES = frozenset({'_internal'})


@dataclasses.dataclass(frozen=True)
class Server:
    """One InfluxDB 1.x HTTP endpoint."""

    host: str
    port: int = 8086
    ssl: bool = False
    verify_ssl: bool = False
    user: Optional[str] = None
    password: Optional[str] = dataclasses.field(default=None, repr=False)

    @property
    def url(self) -> str:
        return '%s://%s:%d' % ('https' if self.ssl else 'http',
                               self.host, self.port)


@dataclasses.dataclass(frozen=True)
class RetentionPolicy:
    """The default policy a tenant database must have.

    ``hours`` is None for an infinite policy. The name follows upstream
    (``<N>h`` for default_retention_hours, ``2w`` for a ``project:2w``
    override), so databases made by either tool look alike.
    """

    name: str
    hours: Optional[int]
    shard_duration: Optional[str] = None

    @property
    def duration(self) -> str:
        return 'INF' if self.hours is None else '%dh' % self.hours


@dataclasses.dataclass(frozen=True)
class Tier:
    """A downsampled copy of the raw data: means of ``value`` per interval,
    kept in a policy of its own (``tier_<interval>``) and filled by a
    continuous query (``dbpt_tier_<interval>``)."""

    interval: str
    policy: RetentionPolicy

    @property
    def cq_name(self) -> str:
        return 'dbpt_' + self.policy.name

    @property
    def seconds(self) -> int:
        unit = {'s': 1, 'm': 60, 'h': 3600, 'd': 86400, 'w': 604800}
        return int(self.interval[:-1]) * unit[self.interval[-1]]


@dataclasses.dataclass(frozen=True)
class Placement:
    tenant_id: str
    server: Server
    database: str
    retention: Optional[RetentionPolicy]
    tiers: tuple = ()


def parse_duration(text: str, bare_unit: str = 'h') -> RetentionPolicy:
    """Parse ``2w``, ``1d``, ``72h`` or ``inf``; a bare number is in *bare_unit*."""
    value = str(text).strip()
    if value.lower() == 'inf':
        return RetentionPolicy(name='inf', hours=None)
    match = _DURATION.fullmatch(value)
    if not match:
        raise InvalidDuration(
            'retention %r is not <N>h, <N>d, <N>w or inf' % (text,))
    number, unit = int(match.group(1)), match.group(2) or bare_unit
    if unit not in _UNIT_HOURS:
        raise InvalidDuration('retention %r: unknown unit %r' % (text, unit))
    hours = number * _UNIT_HOURS[unit]
    if hours < 1:
        raise InvalidDuration(
            'retention %r is shorter than InfluxDB\'s minimum of 1h' % (text,))
    return RetentionPolicy(name='%d%s' % (number, unit), hours=hours)


_INTERVAL = re.compile(r'(\d+)([smhdw])')


def parse_tiers(items) -> tuple:
    """``5m:4w,1h:260w:52w`` (or its list) -> tiers, shortest interval
    first. The optional third part is the tier's own shard group duration
    (a five-year tier in week-long groups would hold 261 shards)."""
    if isinstance(items, str):
        items = [p for p in (i.strip() for i in items.split(',')) if p]
    tiers = {}
    for item in items:
        parts = [p.strip() for p in str(item).strip().split(':')]
        match = _INTERVAL.fullmatch(parts[0])
        if len(parts) not in (2, 3) or not match or int(match.group(1)) < 1:
            raise InvalidDuration('retention tier %r is not <interval>:<dura'
                                  'tion>[:<shard duration>], e.g. 5m:4w or '
                                  '1h:260w:52w (interval units s, m, h, d, w)'
                                  % (item,))
        rp = parse_duration(parts[1])
        name = 'tier_' + parts[0]
        shard = None
        if len(parts) == 3:
            shard = _shard_duration(parts[2], 'retention tier %r' % (item,))
            if rp.hours is not None and \
                    parse_duration(shard).hours > rp.hours:
                raise InvalidDuration('retention tier %r: shard duration %s '
                                      'is longer than the tier keeps data'
                                      % (item, shard))
        tiers[name] = Tier(parts[0], dataclasses.replace(
            rp, name=name, shard_duration=shard))
    return tuple(sorted(tiers.values(), key=lambda t: t.seconds))


def parse_tenant_tiers(lines) -> dict:
    """``project=5m:8w,1h:inf`` lines (``project=`` for none) -> tiers."""
    result = {}
    for line in lines or ():
        tenant, sep, spec = str(line).partition('=')
        if not sep or not tenant.strip():
            raise InvalidDuration('tenant tiers %r is not project=<tiers>'
                                  % (line,))
        try:
            result[tenant.strip()] = parse_tiers(spec)
        except InvalidDuration as exc:
            raise InvalidDuration('project %s: %s' % (tenant.strip(), exc)) \
                from None
    return result


def parse_overrides(items: Mapping[str, str] | str,
                    bare_unit: str = 'h') -> dict[str, RetentionPolicy]:
    """Parse ``project:2w,project2:1d`` (or the dict oslo's DictOpt made of it)."""
    if isinstance(items, str):
        pairs = {}
        for part in filter(None, (p.strip() for p in items.split(','))):
            tenant, sep, value = part.partition(':')
            if not sep:
                raise InvalidDuration(
                    'retention override %r is not project:duration' % part)
            pairs[tenant.strip()] = value
        items = pairs
    result = {}
    for tenant, value in items.items():
        try:
            result[tenant] = parse_duration(value, bare_unit)
        except InvalidDuration as exc:
            raise InvalidDuration('project %s: %s' % (tenant, exc)) from None
    return result


def default_shard_hours(hours: Optional[int]) -> int:
    """The shard group duration InfluxDB 1.x picks for a policy."""
    if hours is None or hours >= 24 * 183:
        return 24 * 7
    return 24 if hours >= 48 else 1


def _shard_duration(text: Optional[str],
                    what: str = '[dbpt] shard_duration') -> Optional[str]:
    """A shard group duration as InfluxDB takes it; a unit is required,
    since InfluxQL refuses a bare number (``expected duration``)."""
    if not text:
        return None
    value = str(text).strip()
    if not re.fullmatch(r'\d+[hdw]', value):
        raise InvalidOption('%s: shard duration %r: use <N>h, <N>d or <N>w, '
                            'e.g. 1d' % (what, text))
    try:
        parse_duration(value)
    except InvalidDuration as exc:
        raise InvalidOption('%s: %s' % (what, exc)) from None
    return value


def parse_server(url: str, like: Server) -> Server:
    """``http(s)://host:port`` -> Server, credentials taken from *like*."""
    parsed = urllib.parse.urlsplit(str(url).strip())
    if parsed.scheme not in ('http', 'https') or not parsed.hostname:
        raise ValueError('server %r is not http(s)://host:port' % (url,))
    return dataclasses.replace(like, host=parsed.hostname,
                               port=parsed.port or 8086,
                               ssl=parsed.scheme == 'https')


def check_database_name(name: str) -> None:
    """Refuse what InfluxDB cannot store as a database directory."""
    if not name or name in ('.', '..'):
        raise InvalidTenantId('database name %r is empty, "." or ".."' % name)
    bad = _FORBIDDEN.search(name)
    if bad:
        raise InvalidTenantId('database name %r contains %r' % (name, bad.group()))
    if not name.isprintable():
        # influxd's meta.ValidName: unicode.IsPrint, the same classes.
        bad = next(c for c in name if not c.isprintable())
        raise InvalidTenantId('database name %r contains the non-printable '
                              'character %r' % (name, bad))
    if len(name.encode('utf-8')) > _MAX_NAME_BYTES:
        raise InvalidTenantId('database name is longer than %d bytes'
                              % _MAX_NAME_BYTES)


def parse_template(template: str, **fixed: str) -> tuple[str, str]:
    """``(prefix, suffix)`` such that a tenant's database is
    ``prefix + tenant_id + suffix``; refuse any template for which that is
    not so.

    The template is parsed as a format string, not searched as text, so
    ``{{tenant_id}}`` (a literal), ``{tenant_id!r}``, ``{tenant_id:.4}`` or
    ``{tenant_id[0]}`` (which would let two tenants share a database) are
    all refused, and so is any placeholder that is not documented.
    """
    def refuse(what: str) -> InvalidOption:
        return InvalidOption('[dbpt] database_template %r: %s' % (template,
                                                                  what))
    try:
        parts = list(string.Formatter().parse(str(template)))
    except ValueError as exc:
        raise refuse('%s (write a literal brace as {{ or }})' % exc) \
            from None
    prefix, suffix, tenant_fields = [], [], 0
    for literal, field, spec, conversion in parts:
        (suffix if tenant_fields else prefix).append(literal)
        if field is None:
            continue
        if conversion or spec:
            raise refuse('{%s%s%s} has a conversion or format spec; only '
                         'plain {tenant_id} and {%s} are allowed' % (
                             field, '!' + conversion if conversion else '',
                             ':' + spec if spec else '',
                             '}, {'.join(TEMPLATE_PLACEHOLDERS)))
        if field == 'tenant_id':
            tenant_fields += 1
            if tenant_fields > 1:
                raise refuse('{tenant_id} appears more than once')
        elif field in TEMPLATE_PLACEHOLDERS:
            (suffix if tenant_fields else prefix).append(fixed[field])
        else:
            raise refuse('unknown placeholder {%s}; the template may hold '
                         'only {tenant_id} (exactly once) and {%s}' % (
                             field, '}, {'.join(TEMPLATE_PLACEHOLDERS)))
    if tenant_fields != 1:
        raise refuse('has no {tenant_id} placeholder: every tenant would '
                     'share one database')
    return ''.join(prefix), ''.join(suffix)


class PlacementMap:
    """Tenant id -> Placement, validated once and cached per process."""

    def __init__(self, *, database_name: str = 'mon',
                 db_per_tenant: bool = True,
                 database_template: str = '{database_name}_{tenant_id}',
                 tenant_id_pattern: str = r'[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}',
                 default_retention_hours: int = 0,
                 retention_overrides: Optional[Mapping[str, RetentionPolicy]] = None,
                 shard_duration: Optional[str] = None,
                 server: Server = Server('127.0.0.1'),
                 tiers: tuple = (),
                 tenant_tiers: Optional[Mapping[str, tuple]] = None,
                 servers: Optional[Mapping[str, Server]] = None,
                 tenant_servers_file: Optional[str] = None,
                 hash_servers: Sequence[str] = ()) -> None:
        self.servers = dict(servers or {})
        self.servers.setdefault('default', server)
        for name in hash_servers:
            if name not in self.servers:
                raise InvalidOption('[dbpt] hash_servers names %r, which is not '
                                 'in [dbpt] servers' % name)
        self.hash_servers = [self.servers[n] for n in hash_servers]
        self.tenant_servers_file = tenant_servers_file
        self._tenant_servers: dict[str, Server] = {}
        self._servers_file_seen = None
        self._servers_file_next = 0.0
        self._tiers_in = tiers
        self._tenant_tiers_in = dict(tenant_tiers or {})
        self.database_name = database_name
        self.db_per_tenant = db_per_tenant
        self.database_template = database_template
        try:
            self._pattern = re.compile(tenant_id_pattern)
        except re.error as exc:
            raise InvalidOption('[dbpt] tenant_id_pattern %r does not '
                                'compile: %s' % (tenant_id_pattern, exc)) \
                from None
        self._shard_duration = _shard_duration(shard_duration)
        # Per tenant, "no retention" is still a policy to reconcile to
        # (InfluxDB's own autogen, infinite), so that removing an override
        # or default_retention_hours brings a shortened policy back.
        if default_retention_hours > 0:
            default = RetentionPolicy('%dh' % default_retention_hours,
                                      default_retention_hours)
        elif db_per_tenant:
            default = RetentionPolicy('autogen', None)
        else:
            default = None
        self.default_retention = self._with_shard(default)
        self.overrides = {t: self._with_shard(rp) for t, rp in
                          (retention_overrides or {}).items()}
        self.tiers = self._tiers_with_shard(self._tiers_in)
        self.tenant_tiers = {t: self._tiers_with_shard(tt) for t, tt in
                             self._tenant_tiers_in.items()}
        self._check_tiers()
        self.default_server = server
        self._cache: dict[str, Placement] = {}
        try:
            check_database_name(database_name)
        except InvalidTenantId as exc:
            raise InvalidOption('[influxdb] database_name: %s' % exc) \
                from None
        # Checked whether or not db_per_tenant is on: the migration turns it
        # on, and a template must never become valid by accident.
        self._prefix, self._suffix = parse_template(
            database_template, database_name=database_name)
        try:
            check_database_name(self._prefix + 'x' + self._suffix)
        except InvalidTenantId as exc:
            raise InvalidOption('[dbpt] database_template %r: %s' % (
                database_template, exc)) from None
        #: Never a tenant's database: InfluxDB's own and the shared one.
        self.reserved = RESERVED_DATABASES | {database_name}
        if tenant_servers_file:
            self._check_servers_file()  # a bad file fails at start-up

    def _with_shard(self, rp: Optional[RetentionPolicy]):
        """*rp* with ``[dbpt] shard_duration``, or, for a policy shorter
        than that, the shard duration InfluxDB would choose for it (a shard
        group may never outlast its policy)."""
        if rp is None or not self._shard_duration:
            return rp
        shard = self._shard_duration
        if rp.hours is not None and parse_duration(shard).hours > rp.hours:
            shard = '%dh' % default_shard_hours(rp.hours)
        return dataclasses.replace(rp, shard_duration=shard)

    def _tiers_with_shard(self, tiers: tuple) -> tuple:
        """A tier's own shard duration wins over ``[dbpt] shard_duration``."""
        return tuple(t if t.policy.shard_duration else
                     dataclasses.replace(t, policy=self._with_shard(t.policy))
                     for t in tiers)

    def _check_tiers(self) -> None:
        """A tier kept for less time than the raw data it summarises is
        a mistake (its means would expire first): refuse it at start."""
        cases = [('[dbpt] retention_tiers', None, self.tiers)]
        cases += [('[dbpt] tenant_tiers', t, tt)
                  for t, tt in self.tenant_tiers.items()]
        cases += [('[dbpt] retention_tiers', t, self.tiers)
                  for t in self.overrides if t not in self.tenant_tiers]
        for option, tenant, tiers in cases:
            raw = self.overrides.get(tenant, self.default_retention) \
                if tenant is not None else self.default_retention
            if raw is None or raw.hours is None:
                continue
            for tier in tiers:
                if tier.policy.hours is not None and \
                        tier.policy.hours < raw.hours:
                    raise InvalidOption(
                        '%s: tier %s is kept %s, shorter than the raw '
                        'policy %s%s' % (option, tier.interval,
                                         tier.policy.duration, raw.duration,
                                         ' of project %s' % tenant
                                         if tenant else ''))

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts, *,
                  db_per_tenant: Optional[bool] = None,
                  extra_overrides: Optional[Mapping[str, RetentionPolicy]] =
                  None) -> 'PlacementMap':
        """The mapping of a config; the migration forces db_per_tenant and
        adds its command line's overrides on top of the config's."""
        influx, dbpt = conf.influxdb, conf.dbpt

        def option(name, parse, value):
            try:
                return parse(value)
            except (InvalidDuration, ValueError) as exc:
                if isinstance(exc, InvalidOption):
                    raise
                raise InvalidOption('[dbpt] %s: %s' % (name, exc)) from None
        overrides = option('retention_overrides', parse_overrides,
                           dbpt.retention_overrides)
        overrides.update(extra_overrides or {})
        default = Server(host=influx.ip_address or '127.0.0.1',
                         port=influx.port, ssl=influx.ssl,
                         verify_ssl=influx.verify_ssl, user=influx.user,
                         password=influx.password)
        if 'default' in dbpt.servers:
            raise InvalidOption('[dbpt] servers: the name "default" is '
                                'reserved for [influxdb] ip_address/port; '
                                'give this server another name')
        servers = {name: option('servers', lambda u: parse_server(u, default),
                                url) for name, url in dbpt.servers.items()}
        return cls(
            database_name=influx.database_name,
            db_per_tenant=influx.db_per_tenant if db_per_tenant is None
            else db_per_tenant,
            database_template=dbpt.database_template,
            tenant_id_pattern=dbpt.tenant_id_pattern,
            default_retention_hours=influx.default_retention_hours,
            retention_overrides=overrides,
            shard_duration=dbpt.shard_duration,
            tiers=option('retention_tiers', parse_tiers,
                         dbpt.retention_tiers),
            tenant_tiers=option('tenant_tiers', parse_tenant_tiers,
                                dbpt.tenant_tiers),
            servers=servers,
            tenant_servers_file=dbpt.tenant_servers_file,
            hash_servers=dbpt.hash_servers,
            server=default)

    def describe(self) -> str:
        """One line for the start-up log: what the mapping will do."""
        if not self.db_per_tenant:
            return 'shared: every tenant in %s' % self.database_name
        rp = self.default_retention
        return ('%s<tenant>%s on %s%s, default retention %s, %d override(s)'
                '%s' % (self._prefix, self._suffix, self.default_server.url,
                        ' and %d more server(s)' % (len(self.servers) - 1)
                        if len(self.servers) > 1 else '',
                        rp.duration if rp else 'INF', len(self.overrides),
                        ', tiers %s' % ','.join(t.interval for t in self.tiers)
                        if self.tiers else ''))

    def validate(self, tenant_id) -> None:
        """Raise InvalidTenantId saying why *tenant_id* gets no database."""
        if not isinstance(tenant_id, str):
            raise InvalidTenantId('tenant id %r is not a string' % (tenant_id,))
        if not tenant_id or tenant_id in ('.', '..'):
            raise InvalidTenantId('tenant id %r is empty, "." or ".."'
                                  % tenant_id)
        bad = _FORBIDDEN.search(tenant_id)
        if bad:
            raise InvalidTenantId('tenant id %r contains %r'
                                  % (tenant_id, bad.group()))
        if not self._pattern.fullmatch(tenant_id):
            raise InvalidTenantId('tenant id %r does not match [dbpt] '
                                  'tenant_id_pattern %r'
                                  % (tenant_id, self._pattern.pattern))

    def database_for(self, tenant_id: str) -> str:
        if not self.db_per_tenant:
            return self.database_name
        return self._prefix + tenant_id + self._suffix

    def retention_for(self, tenant_id: str) -> Optional[RetentionPolicy]:
        if self.db_per_tenant and tenant_id in self.overrides:
            return self.overrides[tenant_id]
        return self.default_retention

    def tiers_for(self, tenant_id: str) -> tuple:
        if not self.db_per_tenant:
            return self.tiers
        return self.tenant_tiers.get(tenant_id, self.tiers)

    def server_for(self, tenant_id: str) -> Server:
        """The servers file, else the stable hash, else the default."""
        server = self._tenant_servers.get(tenant_id)
        if server is not None:
            return server
        if self.hash_servers:
            digest = hashlib.sha1(tenant_id.encode('utf-8')).digest()
            return self.hash_servers[int.from_bytes(digest[:8], 'big') %
                                     len(self.hash_servers)]
        return self.default_server

    def _check_servers_file(self) -> None:
        """Re-read the tenant servers file when it changed (at most every
        SERVERS_FILE_CHECK seconds); a bad file keeps the last good map."""
        now = time.monotonic()
        if not self.tenant_servers_file or now < self._servers_file_next:
            return
        self._servers_file_next = now + SERVERS_FILE_CHECK
        try:
            stat = os.stat(self.tenant_servers_file)
        except OSError as exc:
            if self._servers_file_seen is not None:
                LOG.error('tenant servers file: %s; keeping the last map',
                          exc)
            else:
                raise InvalidOption('[dbpt] tenant_servers_file: %s' % exc) \
                    from None
            return
        seen = (stat.st_mtime_ns, stat.st_size)
        if seen == self._servers_file_seen:
            return
        mapping = {}
        with open(self.tenant_servers_file, encoding='utf-8') as handle:
            for number, line in enumerate(handle, 1):
                words = line.split('#', 1)[0].split()
                if not words:
                    continue
                if len(words) != 2 or words[1] not in self.servers:
                    message = ('%s line %d: %r is not "tenant server" with a '
                               'server of [dbpt] servers (%s)' % (
                                   self.tenant_servers_file, number,
                                   line.strip(),
                                   ', '.join(sorted(self.servers))))
                    if self._servers_file_seen is None:
                        raise InvalidOption('[dbpt] tenant_servers_file: '
                                            + message)
                    LOG.error('%s; keeping the last map', message)
                    return
                mapping[words[0]] = self.servers[words[1]]
        if self._servers_file_seen is not None:
            LOG.info('tenant servers file %s changed: %d tenant(s) placed',
                     self.tenant_servers_file, len(mapping))
        self._servers_file_seen = seen
        self._tenant_servers = mapping
        self._cache.clear()

    def target_policy(self, tenant_id: str,
                      source_policy: str) -> Optional[str]:
        """The policy of the tenant database that receives *source_policy*'s
        points when migrating; None is the database's default policy, the
        one the persister writes and monasca-api reads."""
        return None

    def place(self, tenant_id: str) -> Placement:
        """Where *tenant_id*'s data lives; raises InvalidTenantId."""
        if self.tenant_servers_file:
            self._check_servers_file()
        placement = (self._cache.get(tenant_id) if type(tenant_id) is str
                     else None)
        if placement is None:
            self.validate(tenant_id)
            database = self.database_for(tenant_id)
            check_database_name(database)
            if self.db_per_tenant and database in self.reserved:
                raise InvalidTenantId(
                    'tenant id %r would be written to %r, which is reserved '
                    '(InfluxDB\'s own or the shared database)'
                    % (tenant_id, database))
            placement = Placement(tenant_id, self.server_for(tenant_id),
                                  database, self.retention_for(tenant_id),
                                  self.tiers_for(tenant_id))
            if len(self._cache) >= PLACEMENT_CACHE_MAX:
                self._cache.clear()
            self._cache[tenant_id] = placement
        return placement
