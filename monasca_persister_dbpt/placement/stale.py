"""Stale ranges: where a replica may lack points, so that readers skip it
there and ``monasca-persister-dbpt-migrate --repair`` knows what to copy.

A persister worker that could not write a replica's points at once records
it on every *other* server, in :data:`DATABASE` (reserved: no tenant
database, never listed by monasca-api), one marker per replica server,
worker and outage:

- tags ``server`` (the replica's URL) and ``writer`` (host, pid, outage);
- fields ``lo`` and ``hi``: the oldest and newest point time (ns) it
  missed, ``hi`` = :data:`OPEN` while the outage lasts; ``state``:
  ``open`` (the points are on their way, in the spill or in memory; the
  worker sets ``clear`` once they are all written), ``lost`` (some were
  dropped for that replica: only ``--repair`` clears it) or ``clear``;
  ``updated``: when the marker was last written (the latest copy of a
  marker wins, since a server that was down when it changed keeps an older
  one).

A replica whose server came back without its data gets a ``lost`` marker
over all time (see :mod:`monasca_persister_dbpt.influx.identity`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable, Iterable, Mapping, Optional

from monasca_persister_dbpt.influx import line_protocol as lp
from monasca_persister_dbpt.placement.server_views import ServerView
from monasca_persister_dbpt.placement.servers import Server
from monasca_persister_dbpt.placement.tenants import STALE_DATABASE

LOG = logging.getLogger(__name__)

DATABASE = STALE_DATABASE
MEASUREMENT = 'stale'
OPEN_STATE = 'open'
LOST = 'lost'
CLEAR = 'clear'
#: ``hi`` of a range still growing.
OPEN = -1
#: Earliest and latest times InfluxDB stores (ns): a range over all time.
ALL_TIME = (-9223372036854775806, 9223372036854775806)
SELECT_MARKERS = ('SELECT "lo", "hi", "state", "updated" FROM "%s".."%s" '
                  'GROUP BY *' % (DATABASE, MEASUREMENT))
#: Seconds between a reader's looks at the markers.
REFRESH_EVERY = 2.0


@dataclasses.dataclass(frozen=True)
class StaleRange:
    server: str            # URL of the replica that may lack points
    writer: str            # who recorded it
    since: int             # ns: when the outage began (the marker's time)
    lo: int
    hi: int                # OPEN: still growing
    state: str
    updated: int = 0

    @property
    def key(self) -> tuple:
        return (self.server, self.writer, self.since)

    @property
    def stale(self) -> bool:
        return self.state != CLEAR

    def overlaps(self, lower: Optional[int], upper: Optional[int]) -> bool:
        """Whether it meets the points in [lower, upper] (None: unbounded)."""
        if upper is not None and self.lo > upper:
            return False
        return not (lower is not None and self.hi != OPEN and
                    self.hi < lower)

    def with_state(self, state: str, hi: Optional[int] = None
                   ) -> 'StaleRange':
        return dataclasses.replace(self, state=state, updated=time.time_ns(),
                                   hi=self.hi if hi is None else hi)


def marker_line(stale: StaleRange) -> str:
    return '%s,server=%s,writer=%s hi=%di,lo=%di,state="%s",updated=%di %d' \
        % (MEASUREMENT, lp.escape_name(stale.server, 'tag value'),
           lp.escape_name(stale.writer, 'tag value'), stale.hi, stale.lo,
           stale.state, stale.updated or time.time_ns(), stale.since)


def parse_markers(result: Mapping) -> list[StaleRange]:
    """Markers from the result of :data:`SELECT_MARKERS` (epoch ns)."""
    out = []
    for series in result.get('series') or ():
        tags = series.get('tags') or {}
        columns = series['columns']
        for values in series.get('values') or ():
            row = dict(zip(columns, values))
            if not tags.get('server') or row.get('lo') is None:
                continue
            out.append(StaleRange(tags['server'], tags.get('writer') or '',
                                  int(row['time']), int(row['lo']),
                                  int(row['hi'] if row.get('hi') is not None
                                      else OPEN),
                                  row.get('state') or OPEN_STATE,
                                  int(row.get('updated') or 0)))
    return out


def markers_in(result: Mapping) -> list[StaleRange]:
    """The markers of one :data:`SELECT_MARKERS` result; none on a server
    that never held one; RuntimeError for any other error."""
    if 'error' in result:
        if 'not found' in result['error']:
            return []
        raise RuntimeError('reading stale ranges: %s' % result['error'])
    return parse_markers(result)


def latest(markers: Iterable[StaleRange]) -> dict[tuple, StaleRange]:
    """Key -> the most recently written copy of each marker."""
    out: dict[tuple, StaleRange] = {}
    for marker in markers:
        known = out.get(marker.key)
        if known is None or marker.updated > known.updated:
            out[marker.key] = marker
    return out


class StaleTable(ServerView):
    """A reader's view of every server's markers, refreshed every
    :data:`REFRESH_EVERY` seconds; a server that cannot be asked keeps its
    last answer (the markers it holds are about the others)."""

    what = 'stale ranges'

    def __init__(self, servers: Iterable[Server],
                 look: Callable[[Server], list],
                 every: float = REFRESH_EVERY) -> None:
        super().__init__(servers, look, every)
        self._stale: dict[str, list] = {}

    def rebuild(self, answers: dict) -> None:
        stale: dict[str, list] = {}
        for marker in latest(m for found in answers.values()
                             for m in found).values():
            if marker.stale:
                stale.setdefault(marker.server, []).append(marker)
        self._stale = stale

    def by_server(self) -> dict[str, list]:
        """Replica URL -> its stale ranges (not clear)."""
        self.refresh()
        return dict(self._stale)

    def stale_over(self, server: Server, lower: Optional[int],
                   upper: Optional[int]) -> Optional[StaleRange]:
        """The first stale range of *server* meeting [lower, upper]."""
        self.refresh()
        for marker in self._stale.get(server.url, ()):
            if marker.overlaps(lower, upper):
                return marker
        return None
