"""Tenants on their way to another server: what a rebalance records, and
what readers follow so that a move never shows a partial history.

Before it copies anything, a rebalance writes one marker per tenant and
source server into :data:`MOVES_DATABASE` on the tenant's new server, and
rewrites it when the copy is verified:

- ``copying`` with a split time T, the earliest point the new server held
  when the move began (the persister has written there since the map
  changed). Points before T are read from the source, points from T on
  from the new server: every point is answered by exactly one of them.
- ``verified``: the new server holds everything; it alone is read.

A tenant database on a server other than its placement and without a
marker (the map changed, no rebalance has run yet) holds only the points
written before the change, the new server only those after it: readers
take the union of both.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Iterable, Mapping, Optional

from monasca_persister_dbpt.influx import line_protocol as lp
from monasca_persister_dbpt.placement.server_views import ServerView
from monasca_persister_dbpt.placement.servers import Server
from monasca_persister_dbpt.placement.tenants import MOVES_DATABASE

LOG = logging.getLogger(__name__)

DATABASE = MOVES_DATABASE
MEASUREMENT = 'move'
COPYING = 'copying'
VERIFIED = 'verified'
#: The statement that reads every marker of a server (whatever database
#: the client names).
SELECT_MARKERS = 'SELECT "split", "state" FROM "%s".."%s" GROUP BY *' % (
    DATABASE, MEASUREMENT)
#: Seconds between a reader's looks at the servers' databases and markers.
REFRESH_EVERY = 10.0


@dataclasses.dataclass(frozen=True)
class Move:
    tenant_id: str
    source: str          # URL of the server holding the older copy
    split: int           # ns: before it from the source, from it the target
    state: str = COPYING


def marker_line(move: Move) -> str:
    """The marker as line protocol (at time 0: rewriting it updates it)."""
    return '%s,source=%s,tenant=%s split=%di,state="%s" 0' % (
        MEASUREMENT, lp.escape_name(move.source, 'tag value'),
        lp.escape_name(move.tenant_id, 'tag value'), move.split, move.state)


def parse_markers(result: Mapping) -> list[Move]:
    """Markers from the result of :data:`SELECT_MARKERS`."""
    moves = []
    for series in result.get('series') or ():
        tags = series.get('tags') or {}
        columns = series['columns']
        for values in series.get('values') or ():
            row = dict(zip(columns, values))
            if tags.get('tenant') and tags.get('source') and \
                    row.get('split') is not None:
                moves.append(Move(tags['tenant'], tags['source'],
                                  int(row['split']), row.get('state') or
                                  COPYING))
    return moves


@dataclasses.dataclass(frozen=True)
class Part:
    """One server's share of a tenant's reads: points in [lower, upper)."""
    server: Server
    lower: Optional[int] = None     # ns, inclusive; None: from the start
    upper: Optional[int] = None     # ns, exclusive; None: to the end


class MoveTable(ServerView):
    """A reader's view of the moves, refreshed every :data:`REFRESH_EVERY`.

    *look(server)* returns ``(databases, markers)`` of one server; a
    server that cannot be asked keeps its last answer. What is kept is
    bounded by the databases on the servers.
    """

    what = 'moves'

    def __init__(self, servers: Iterable[Server],
                 look: Callable[[Server], tuple[set, list]],
                 tenant_of: Callable[[str], Optional[str]],
                 every: float = REFRESH_EVERY) -> None:
        super().__init__(servers, look, every)
        self._tenant_of = tenant_of
        #: tenant -> {server holding a copy}
        self._copies: dict[str, set] = {}
        #: (tenant, source url) -> Move, from every server's markers
        self._markers: dict[tuple, Move] = {}

    def rebuild(self, answers: dict) -> None:
        copies: dict[str, set] = {}
        markers: dict[tuple, Move] = {}
        for server, (databases, found) in answers.items():
            for database in databases:
                tenant = self._tenant_of(database)
                if tenant is not None:
                    copies.setdefault(tenant, set()).add(server)
            for move in found:
                markers[(move.tenant_id, move.source, server.url)] = move
        self._copies, self._markers = copies, markers

    def holders(self, tenant_id: str) -> set:
        """The servers holding a database of *tenant_id*, as last seen."""
        self.refresh()
        return set(self._copies.get(tenant_id, ()))

    def parts(self, tenant_id: str, home: Server,
              replicas: tuple = ()) -> list[Part]:
        """Where to read *tenant_id* placed on *home*: [Part(home)] unless
        another server (not one of its *replicas*, which hold copies of
        their own) holds a copy that is not yet verified as moved."""
        self.refresh()
        others = [s for s in self._copies.get(tenant_id, ())
                  if s != home and s not in replicas]
        if not others:
            return [Part(home)]
        parts = []
        splits = []
        for server in sorted(others, key=lambda s: s.url):
            move = self._markers.get((tenant_id, server.url, home.url))
            if move is None:
                parts.append(Part(server))        # disjoint: the union
            elif move.state == COPYING:
                parts.append(Part(server, upper=move.split))
                splits.append(move.split)
            # VERIFIED: home holds all of it.
        if not parts:
            return [Part(home)]
        return parts + [Part(home, lower=max(splits) if splits else None)]
