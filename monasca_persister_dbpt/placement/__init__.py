"""Where a tenant's data lives: server, database and retention policy.

One entry point, :class:`PlacementMap` (built with
:meth:`PlacementMap.from_conf`), for the persister drivers, the migration
tool and the monasca-api read driver alike; nothing else decides. Its parts:

- :mod:`.tenants`: tenant ids (validated, never rewritten) and the database
  template, proven one-to-one;
- :mod:`.retention`: default policies, overrides, tiers, shard durations;
- :mod:`.servers`: servers, rendezvous hashing and replicas;
- :mod:`.moves` and :mod:`.stale`: what readers follow across servers
  (tenants being moved, replicas that lack a time range), over
  :mod:`.server_views`;
- :mod:`.overrides`: the tenant overrides file (servers and per-tenant
  settings such as limits) and its reload;
- :mod:`.errors`: what each of them refuses.
"""

from monasca_persister_dbpt.placement.errors import InvalidDuration
from monasca_persister_dbpt.placement.errors import InvalidOption
from monasca_persister_dbpt.placement.errors import InvalidTenantId
from monasca_persister_dbpt.placement.mapping import PLACEMENT_CACHE_MAX
from monasca_persister_dbpt.placement.mapping import Placement
from monasca_persister_dbpt.placement.mapping import PlacementMap
from monasca_persister_dbpt.placement.retention import RetentionPolicy
from monasca_persister_dbpt.placement.retention import Tier
from monasca_persister_dbpt.placement.retention import default_shard_hours
from monasca_persister_dbpt.placement.retention import parse_duration
from monasca_persister_dbpt.placement.retention import parse_overrides
from monasca_persister_dbpt.placement.retention import parse_tenant_tiers
from monasca_persister_dbpt.placement.retention import parse_tiers
from monasca_persister_dbpt.placement.overrides import SETTINGS
from monasca_persister_dbpt.placement.overrides import TenantOverrides
from monasca_persister_dbpt.placement.servers import Server
from monasca_persister_dbpt.placement.servers import parse_server
from monasca_persister_dbpt.placement.servers import rendezvous
from monasca_persister_dbpt.placement.tenants import RESERVED_DATABASES
from monasca_persister_dbpt.placement.tenants import TEMPLATE_PLACEHOLDERS
from monasca_persister_dbpt.placement.tenants import check_database_name
from monasca_persister_dbpt.placement.tenants import parse_template

__all__ = [
    'InvalidDuration', 'InvalidOption', 'InvalidTenantId',
    'PLACEMENT_CACHE_MAX', 'Placement', 'PlacementMap', 'RetentionPolicy',
    'Tier', 'default_shard_hours', 'parse_duration', 'parse_overrides',
    'parse_tenant_tiers', 'parse_tiers', 'SETTINGS', 'Server', 'TenantOverrides',
    'parse_server', 'rendezvous', 'RESERVED_DATABASES',
    'TEMPLATE_PLACEHOLDERS', 'check_database_name', 'parse_template',
]
