"""Dropping a tenant's data everywhere it lives, and keeping it dropped.

A drop removes the tenant database from every server that holds it (its
replicas and any leftover of a move), not only from where the placement
says it lives. Unless told otherwise it first blocks the tenant in the
overrides file (``blocked=true``: every new point refused and counted),
then waits for the persisters to read that file, so a late record of a
deleted project cannot quietly create the database again.
"""

from __future__ import annotations

import time
from typing import Callable

from monasca_persister_dbpt.influx.influxql import quote_ident
from monasca_persister_dbpt.influx.writer import WriteFailed
from monasca_persister_dbpt.placement import PlacementMap
from monasca_persister_dbpt.placement import overrides
from monasca_persister_dbpt.tenants.inventory import Inventory


def settle_seconds(max_delay: float) -> float:
    """How long a block takes to reach every persister: two looks at the
    overrides file, plus the longest a coalesced point waits."""
    return 2 * overrides.CHECK_EVERY + max_delay


class Removal:
    def __init__(self, placements: PlacementMap, inventory: Inventory,
                 say: Callable[[str], None] = print) -> None:
        self.placements = placements
        self.inventory = inventory
        self.say = say

    def block(self, tenants: list) -> int:
        """Mark *tenants* ``blocked=true`` in the overrides file; how many
        lines changed."""
        path = self.placements.tenant_overrides.path
        changed = 0
        for tenant_id in tenants:
            changed += overrides.set_setting(
                path, tenant_id, 'blocked', 'true',
                servers=self.placements.servers)
        return changed

    def drop(self, tenants: dict, settle: float = 0.0,
             sleep: Callable[[float], None] = time.sleep) -> list:
        """Drop every copy in *tenants* (tenant -> TenantDatabases) after
        *settle* seconds; the copies that remain, as lines (empty: all
        gone)."""
        if settle > 0:
            self.say('waiting %g s for the persisters to read the overrides '
                     'file before dropping' % settle)
            sleep(settle)
        failed = []
        for entry in tenants.values():
            for copy in entry.copies:
                try:
                    result = self.inventory.writer.run(
                        copy.server, 'DROP DATABASE %s'
                        % quote_ident(copy.database))[0]
                except WriteFailed as exc:
                    failed.append('%s on %s (%s): %s' % (
                        copy.database, copy.server_name, copy.server.url,
                        exc))
                    continue
                if 'error' in result:
                    failed.append('%s on %s (%s): %s' % (
                        copy.database, copy.server_name, copy.server.url,
                        result['error']))
                else:
                    self.say('dropped %s on %s (%s)' % (
                        copy.database, copy.server_name, copy.server.url))
        left = self.inventory.scan(set(tenants), details=False)
        remaining = ['%s remains on %s (%s)' % (c.database, c.server_name,
                                                c.server.url)
                     for entry in left.tenants.values()
                     for c in entry.copies]
        remaining += ['%s could not be asked again: %s' % (
            ', '.join(sorted(tenants)), why) for why in left.unreachable]
        return failed + remaining


def read_projects(handle, source: str) -> set:
    """Live project ids, one a line (``openstack project list -f value -c
    ID``); blank lines and ``#`` comments skipped."""
    projects = {line.split('#', 1)[0].strip() for line in handle}
    projects.discard('')
    if not projects:
        raise ValueError('--projects %s holds no project id: refusing to '
                         'take every tenant for an orphan' % source)
    return projects


def describe(entry, copy) -> str:
    """One line of what a drop removes."""
    return '%s: %s on %s (%s)%s, %s series, %s bytes' % (
        entry.tenant_id, copy.database, copy.server_name, copy.server.url,
        '' if copy.placed else ' [leftover]',
        '?' if copy.series is None else copy.series,
        '?' if copy.disk_bytes is None else copy.disk_bytes)
