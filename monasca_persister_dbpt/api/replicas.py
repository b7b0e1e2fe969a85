"""Which replica answers a monasca-api call.

A replica is skipped when a stale range of its server meets the call's
time range (:mod:`monasca_persister_dbpt.placement.stale`), when it lacks
the tenant's database that another replica holds, and, for
:data:`QUARANTINE` seconds, when it did not answer within ``[dbpt]
replica_read_timeout``. Replicas that are only suspected (quarantined) are
still tried when nothing better is left; stale ones never are: a call no
complete replica can answer fails, as monasca-api fails for a down
InfluxDB, instead of returning part of the answer.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Optional

from monasca_persister_dbpt.placement import Placement, Server
from monasca_persister_dbpt.placement import stale

LOG = logging.getLogger(__name__)

#: Seconds a replica that did not answer is tried last. Longer than a
#: persister needs to write what it held for a server that answers again
#: (its retries back off to [dbpt] retry_backoff_max), so a replica that
#: came back is read once it caught up or once its stale range is known.
QUARANTINE = 30.0


class NoReplica(ConnectionError):
    """No replica can answer a call completely; the message says why."""


class ReplicaChooser:
    def __init__(self, stale_table: stale.StaleTable,
                 holders=None) -> None:
        self._stale = stale_table
        #: tenant id -> servers holding its database, or None (unknown).
        self._holders = holders
        self._failed: dict[Server, float] = {}
        self._lock = threading.Lock()

    def order(self, placement: Placement, lower: Optional[int],
              upper: Optional[int]) -> tuple[list[Placement], list[str]]:
        """The copies to try, best first, and why the others are not."""
        now = time.monotonic()
        holders = self._holders(placement.tenant_id) \
            if self._holders is not None else None
        # Only a replica that lacks what another replica holds is skipped
        # (a tenant still on its old server is read as moves.py says).
        holders = set(holders or ()) & set(placement.servers)
        good, suspect, skipped = [], [], []
        for copy in placement.copies:
            server = copy.server
            marker = self._stale.stale_over(server, lower, upper)
            if marker is not None:
                skipped.append('%s has a stale range (%s, recorded by %s)'
                               % (server.url, marker.state, marker.writer))
                continue
            if holders and server not in holders:
                skipped.append('%s has no database %s that another replica '
                               'has' % (server.url, copy.database))
                continue
            if self._failed.get(server, 0.0) > now:
                suspect.append(copy)
            else:
                good.append(copy)
        return good + suspect, skipped

    def failed(self, server: Server) -> None:
        with self._lock:
            self._failed[server] = time.monotonic() + QUARANTINE

    def answered(self, server: Server) -> None:
        if server in self._failed:
            with self._lock:
                self._failed.pop(server, None)
