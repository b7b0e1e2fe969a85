"""The one entry point: tenant id -> :class:`Placement`.

The persister drivers, the migration tool and the monasca-api read driver
all build a :class:`PlacementMap` with :meth:`PlacementMap.from_conf` and
ask it; nothing else decides where a tenant's data lives. Its parts each
hold one idea: :mod:`.tenants` (ids and database names), :mod:`.retention`
(policies and tiers), :mod:`.servers` (which server).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Mapping, Optional, Sequence

from oslo_config import cfg

from monasca_persister_dbpt.placement.errors import InvalidDuration
from monasca_persister_dbpt.placement.errors import InvalidOption
from monasca_persister_dbpt.placement.retention import Retention
from monasca_persister_dbpt.placement.retention import RetentionPolicy
from monasca_persister_dbpt.placement.retention import parse_overrides
from monasca_persister_dbpt.placement.retention import parse_tenant_tiers
from monasca_persister_dbpt.placement.retention import check_tier_lengths
from monasca_persister_dbpt.placement.retention import parse_tiers
from monasca_persister_dbpt.placement.servers import Server, ServerMap
from monasca_persister_dbpt.placement.servers import parse_server
from monasca_persister_dbpt.placement.tenants import TenantIds

_LOCAL = Server('127.0.0.1')
_SLOTS = {'slots': True} if sys.version_info >= (3, 10) else {}
#: Placements cached per process (the cache is emptied when full; a miss
#: costs a validation and a string concatenation).
PLACEMENT_CACHE_MAX = 20000


# Slots where Python has them (3.10): 100k cached placements stay small.
@dataclasses.dataclass(frozen=True, **_SLOTS)
class Placement:
    tenant_id: str
    server: Server
    database: str
    retention: Optional[RetentionPolicy]
    tiers: tuple = ()
    #: Every server holding the database, ``server`` first; empty: only
    #: ``server``.
    replicas: tuple = ()
    #: This placement once per replica, when it has several (set by
    #: PlacementMap.place).
    others: tuple = dataclasses.field(default=(), compare=False, repr=False)

    @property
    def servers(self) -> tuple:
        return self.replicas or (self.server,)

    @property
    def copies(self) -> tuple:
        """This placement once per replica, this one first."""
        return (self,) + self.others

    def on(self, server: Server) -> 'Placement':
        """The same database on *server* (one of its replicas)."""
        for copy in self.copies:
            if copy.server == server:
                return copy
        return dataclasses.replace(self, server=server, others=())


class PlacementMap:
    """Tenant id -> Placement, validated once and cached per process."""

    def __init__(self, *, database_name: str = 'mon',
                 db_per_tenant: bool = True,
                 database_template: str = '{database_name}_{tenant_id}',
                 tenant_id_pattern: str = r'[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}',
                 default_retention_hours: int = 0,
                 retention_overrides: Optional[Mapping[str, RetentionPolicy]] = None,
                 shard_duration: Optional[str] = None,
                 server: Server = _LOCAL,
                 tiers: tuple = (),
                 tenant_tiers: Optional[Mapping[str, tuple]] = None,
                 servers: Optional[Mapping[str, Server]] = None,
                 overrides_file: Optional[str] = None,
                 hash_servers: Sequence[str] = (),
                 tier_lateness: int = 0, replicas: int = 1) -> None:
        self.database_name = database_name
        self.db_per_tenant = db_per_tenant
        # Checked whether or not db_per_tenant is on: the migration turns it
        # on, and a template must never become valid by accident.
        self.tenants = TenantIds(database_name, database_template,
                                 tenant_id_pattern)
        self.retention = Retention(
            db_per_tenant=db_per_tenant,
            default_retention_hours=default_retention_hours,
            overrides=retention_overrides, shard_duration=shard_duration,
            tiers=tiers, tenant_tiers=tenant_tiers,
            tier_lateness=tier_lateness)
        self._cache: dict[str, Placement] = {}
        self.server_map = ServerMap(server, servers, overrides_file,
                                    hash_servers, replicas)
        #: Per-tenant settings and servers, re-read at run time.
        self.tenant_overrides = self.server_map.overrides
        self.tenant_overrides.listeners.append(self._cache.clear)
        #: Tenants whose retention or tiers the config (or the migration's
        #: command line) sets: the file may not set them again.
        self._configured = (frozenset(self.retention.overrides),
                            frozenset(self.retention.tenant_tiers))
        self.tenant_overrides.add_check(self._check_file)

    # What callers read; each part answers for itself.
    @property
    def reserved(self) -> frozenset:
        return self.tenants.reserved

    @property
    def default_server(self) -> Server:
        return self.server_map.default

    @property
    def servers(self) -> dict:
        return self.server_map.servers

    @property
    def default_retention(self) -> Optional[RetentionPolicy]:
        return self.retention.default

    @property
    def overrides(self) -> dict:
        return self.retention.overrides

    @property
    def tiers(self) -> tuple:
        return self.retention.tiers

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
            overrides_file=dbpt.tenant_overrides_file,
            hash_servers=dbpt.hash_servers,
            tier_lateness=dbpt.tier_lateness,
            replicas=dbpt.replicas,
            server=default)

    def describe(self) -> str:
        """One line for the start-up log: what the mapping will do."""
        if not self.db_per_tenant:
            return 'shared: every tenant in %s' % self.database_name
        rp = self.default_retention
        servers = self.server_map.servers
        return ('%s<tenant>%s on %s%s%s, default retention %s, %d '
                'override(s)%s' % (self.tenants.prefix, self.tenants.suffix,
                        self.default_server.url,
                        ' and %d more server(s)' % (len(servers) - 1)
                        if len(servers) > 1 else '',
                        ', %d replicas each' % self.server_map.replicas
                        if self.server_map.replicas > 1 else '',
                        rp.duration if rp else 'INF', len(self.overrides),
                        ', tiers %s' % ','.join(t.interval for t in self.tiers)
                        if self.tiers else ''))

    def validate(self, tenant_id) -> None:
        """Raise InvalidTenantId saying why *tenant_id* gets no database."""
        self.tenants.validate(tenant_id)

    def database_for(self, tenant_id: str) -> str:
        if not self.db_per_tenant:
            return self.database_name
        return self.tenants.database(tenant_id)

    def tenant_of(self, database: str) -> Optional[str]:
        """The tenant a per-tenant database belongs to, or None."""
        return self.tenants.tenant_of(database)

    def _check_file(self, settings: Mapping[str, Mapping]) -> None:
        """A tenant's retention or tiers set both in the config and in the
        overrides file, or tiers kept shorter than its raw policy, refuse
        the file."""
        retention, tiers = self._configured
        for tenant, values in settings.items():
            if 'retention' in values and tenant in retention:
                raise InvalidOption(
                    'tenant %s has a retention in both [dbpt] '
                    'retention_overrides and the tenant overrides file; '
                    'keep one' % tenant)
            if 'tiers' in values and tenant in tiers:
                raise InvalidOption(
                    'tenant %s has tiers in both [dbpt] tenant_tiers and the '
                    'tenant overrides file; keep one' % tenant)
            if 'retention' in values or 'tiers' in values:
                check_tier_lengths(
                    'tenant overrides file', tenant,
                    values.get('retention') or self.retention.policy_for(
                        tenant),
                    values.get('tiers', self.retention.tiers_for(tenant)))

    def retention_for(self, tenant_id: str) -> Optional[RetentionPolicy]:
        if self.db_per_tenant and tenant_id not in self.retention.overrides:
            own = self.tenant_overrides.settings_of(tenant_id).get(
                'retention')
            if own is not None:
                return self.retention.with_shard(own)
        return self.retention.policy_for(tenant_id)

    def tiers_for(self, tenant_id: str) -> tuple:
        if self.db_per_tenant and \
                tenant_id not in self.retention.tenant_tiers:
            own = self.tenant_overrides.settings_of(tenant_id).get('tiers')
            if own is not None:
                return self.retention.tiers_with_shard(own)
        return self.retention.tiers_for(tenant_id)

    def server_for(self, tenant_id: str) -> Server:
        return self.server_map.server_for(tenant_id)

    def replicas_for(self, tenant_id: str) -> tuple:
        return self.server_map.replicas_for(tenant_id)

    def blocked(self, tenant_id: str) -> bool:
        """Whether the overrides file blocks the tenant (``blocked=true``):
        none of its points is written any more, even those buffered or
        spilled before the block."""
        return bool(self.tenant_overrides.settings_of(tenant_id).get(
            'blocked'))

    @property
    def replicated(self) -> bool:
        """Whether any tenant may have more than one replica (the write
        path's fast path is for when none can)."""
        return self.server_map.replicas > 1 or \
            self.tenant_overrides.replicated

    def place(self, tenant_id: str) -> Placement:
        """Where *tenant_id*'s data lives; raises InvalidTenantId."""
        if self.tenant_overrides.path:
            self.tenant_overrides.check()
        placement = (self._cache.get(tenant_id) if type(tenant_id) is str
                     else None)
        if placement is None:
            self.tenants.validate(tenant_id)
            database = self.tenants.checked_database(tenant_id) \
                if self.db_per_tenant else self.database_name
            servers = self.replicas_for(tenant_id)
            placement = Placement(tenant_id, servers[0], database,
                                  self.retention_for(tenant_id),
                                  self.tiers_for(tenant_id),
                                  servers if len(servers) > 1 else ())
            if len(servers) > 1:
                object.__setattr__(placement, 'others', tuple(
                    dataclasses.replace(placement, server=s, others=())
                    for s in servers[1:]))
            if len(self._cache) >= PLACEMENT_CACHE_MAX:
                self._cache.clear()
            self._cache[tenant_id] = placement
        return placement
