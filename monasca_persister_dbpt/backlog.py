"""Points of a server that is down, held aside so the other tenants go on.

The host commits one Kafka position per partition for a whole batch, so a
batch cannot be committed for some tenants and not for others. Instead, when
a server stops answering, its tenants' points are held here in memory and
replayed to it in order by one thread per server, while the batch returns and
the persister goes on writing every other tenant. Kafka commits pause while
anything is held (:func:`monasca_persister_dbpt.commit_guard.pause_while`):
the down server's records stay uncommitted until they are written, and a
worker that dies meanwhile reads them again from Kafka.

Held points follow their tenant: before each attempt the tenant is placed
again, so a tenant moved to another server in the tenant servers file takes
its held points there. (A server removed from the configuration needs a
restart, and commits waited for everything held: the restarted worker reads
those records again from Kafka and places them anew.)

Memory is bounded by ``[dbpt] held_points_max``. When a new failure does not
fit, those points are written the old way, retried up to ``[dbpt]
retry_timeout`` and then failed back to the persister uncommitted, so a long
outage ends like one without this module and nothing is dropped.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Iterable, Optional

from monasca_persister_dbpt.influx.writer import Failure, InfluxWriter
from monasca_persister_dbpt.influx.writer import WriteFailed
from monasca_persister_dbpt.placement import InvalidTenantId
from monasca_persister_dbpt.placement import PlacementMap, Server
from monasca_persister_dbpt.stats import Stats

LOG = logging.getLogger(__name__)


class Backlog:
    def __init__(self, writer: InfluxWriter, max_points: int,
                 stats: Stats,
                 placements: Optional[PlacementMap] = None) -> None:
        self._writer = writer
        self._placements = placements
        self._max = max_points
        self._stats = stats
        self._lock = threading.Lock()
        self._queues: dict[Server, collections.deque] = {}
        self._threads: dict[Server, threading.Thread] = {}
        self._points = 0

    def held(self) -> int:
        """Points held and not yet written (the one being replayed too)."""
        return self._points

    def holding(self) -> bool:
        return self._points > 0

    def hold(self, failures: Iterable[Failure]) -> None:
        """Hold what a batch could not write; raise if that is not allowed.

        Anything but a write failure (a bug, say) is raised at once. Points
        that do not fit are written synchronously with the full retry bound,
        which raises :class:`WriteFailed` if the server stays down.
        """
        overflow = []
        for placement, lines, exc in failures:
            if not isinstance(exc, WriteFailed):
                raise exc
            with self._lock:
                fits = self._points + len(lines) <= self._max
                if fits:
                    self._hold(placement, lines)
            if fits:
                self._stats.add(placement.tenant_id, 'points_held',
                                len(lines))
            else:
                overflow.append((placement, lines))
        for placement, lines in overflow:
            LOG.warning('%d points of tenant %s do not fit in [dbpt] '
                        'held_points_max (%d held): writing them with the '
                        'full retry bound', len(lines), placement.tenant_id,
                        self._points)
            self._writer.write(placement, lines)

    def _hold(self, placement, lines) -> None:
        server = placement.server
        queue = self._queues.get(server)
        if queue is None:
            queue = self._queues[server] = collections.deque()
        if not queue:
            LOG.warning('holding points for InfluxDB at %s until it answers; '
                        'Kafka commits wait for them', server.url)
        queue.append((placement, lines))
        self._points += len(lines)
        if server not in self._threads:
            thread = self._threads[server] = threading.Thread(
                target=self._replay, args=(server,), daemon=True,
                name='dbpt-replay')
            thread.start()

    def _replace(self, placement):
        """The tenant's placement now (the map file may have moved it)."""
        if self._placements is None:
            return placement
        try:
            return self._placements.place(placement.tenant_id)
        except InvalidTenantId:  # pragma: no cover - was valid when held
            return placement

    def _replay(self, server: Server) -> None:
        """Write a server's held points in order until none are left."""
        queue = self._queues[server]
        replayed = 0
        first_pause = delay = min(0.25, self._writer.backoff_max)
        while True:
            with self._lock:
                if not queue:
                    del self._threads[server]
                    break
                placement, lines = queue[0]
                current = self._replace(placement)
                if current.server != server:
                    # Moved: its points go with it, to the new server.
                    queue.popleft()
                    self._points -= len(lines)
                    self._hold(current, lines)
                    LOG.warning('%d held points of tenant %s follow it from '
                                '%s to %s', len(lines), placement.tenant_id,
                                server.url, current.server.url)
                    continue
                queue[0] = (current, lines)
            try:
                # One attempt, even though the server is marked down; the
                # pause between attempts is ours, so a move is seen soon.
                self._writer.write(current, lines, retry_for=0.0,
                                   fail_fast=False)
            except WriteFailed as exc:
                LOG.debug('held points for InfluxDB at %s: %s', server.url,
                          exc)
                time.sleep(delay)
                delay = min(delay * 2, self._writer.backoff_max)
                continue
            except Exception:  # noqa: BLE001 - keep the thread alive
                LOG.exception('replaying held points to %s', server.url)
                time.sleep(self._writer.backoff_max)
                continue
            delay = first_pause
            with self._lock:
                queue.popleft()
                self._points -= len(lines)
            replayed += len(lines)
            self._stats.add(current.tenant_id, 'points_replayed',
                            len(lines))
        LOG.warning('InfluxDB at %s: %d held points written', server.url,
                    replayed)
