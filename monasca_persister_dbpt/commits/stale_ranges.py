"""The persister's side of stale ranges (format in
:mod:`monasca_persister_dbpt.placement.stale`): what each replica server
missed, recorded on the other servers before anything can be read from it
again.

A replica that does not take a write at once (held in memory or spilled)
opens this worker's marker for its server, with the oldest point it missed;
once the server answers and none of its points wait here or in the spill
any more, the marker is set ``clear``. Points dropped for a replica (held
past ``[dbpt] replica_stale_after``) make it ``lost``: it stays until
``--repair`` copies the range back. A server that answers without the id
it had (it came back empty) gets a ``lost`` marker over all time.

State is one marker per replica server, whatever the number of tenants.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
from typing import Callable, Iterable, Optional

import requests

from monasca_persister_dbpt.influx import identity
from monasca_persister_dbpt.influx.influxql import quote_ident
from monasca_persister_dbpt.placement import Server
from monasca_persister_dbpt.placement import stale
from monasca_persister_dbpt.stats import LogThrottle

LOG = logging.getLogger(__name__)

#: Seconds between two looks at each server's id (a server that came back
#: empty is noticed within this, or at once by a write that finds its
#: database gone).
IDENTITY_EVERY = 15.0
#: Seconds between two reads of every server's markers for the gauges.
EXPOSE_EVERY = 30.0
#: Seconds a marker write may take per server (more is retried at the
#: next tick).
MARKER_TIMEOUT = 5.0


def span_ns(lines: Iterable[str], precision_ns: int = 1_000_000
            ) -> Optional[tuple[int, int]]:
    """The oldest and newest timestamp of line protocol *lines*."""
    lo = hi = None
    for line in lines:
        try:
            stamp = int(line.rsplit(' ', 1)[1])
        except (IndexError, ValueError):
            continue
        if lo is None or stamp < lo:
            lo = stamp
        if hi is None or stamp > hi:
            hi = stamp
    if lo is None:
        return None
    return lo * precision_ns, hi * precision_ns


class StaleRecorder:
    def __init__(self, servers: Iterable[Server], writer, stats=None,
                 known_ids: Optional[dict] = None) -> None:
        self.servers = sorted(set(servers), key=lambda s: s.url)
        self._writer = writer
        self._stats = stats
        self._lock = threading.Lock()
        #: replica URL -> its open marker (this worker's, this outage's)
        self._open: dict[str, stale.StaleRange] = {}
        #: replica URL -> newest point time missed in the open marker
        self._newest: dict[str, int] = {}
        #: (replica URL, server written to) not written since a change
        self._dirty: set = set()
        self._created: set = set()
        #: key -> a marker that no longer changes, until all servers have it
        self._closed: dict[tuple, stale.StaleRange] = {}
        self._seq = 0
        self._token = '%s:%d' % (socket.gethostname(), os.getpid())
        #: Server -> its id when it was first asked (see identity.py).
        self._ids: dict[Server, str] = dict(known_ids or {})
        self._next_ids = time.monotonic() + IDENTITY_EVERY
        self._ids_lock = threading.Lock()
        self._throttle = LogThrottle(logger=LOG)
        #: Called for each server checked as settled: (server) -> whether
        #: points for it still wait (in memory or in the spill).
        self.waiting: Callable[[Server], bool] = lambda server: False
        #: Every worker's markers as the servers hold them (exposition).
        self.table = stale.StaleTable(self.servers, self._look,
                                      every=EXPOSE_EVERY)

    def _look(self, server: Server) -> list:
        return stale.markers_in(
            self._writer.query(server, stale.SELECT_MARKERS)[0])

    def gauges(self, stats) -> None:
        """Per replica server: stale ranges and the age of the oldest."""
        def ranges():
            return {url: len(found) for url, found in
                    self.table.by_server().items()}

        def oldest():
            now = time.time_ns()
            return {url: round((now - min(m.since for m in found)) / 1e9, 1)
                    for url, found in self.table.by_server().items()}
        stats.labelled('stale_ranges', 'server', ranges)
        stats.labelled('stale_oldest_seconds', 'server', oldest)

    # -- writer threads ----------------------------------------------------

    def missed(self, server: Server, lines, lost: bool = False) -> None:
        """*lines* did not reach *server* now (*lost*: and never will)."""
        span = span_ns(lines)
        if span is None:
            return
        self.extend(server, span, lost)

    def extend(self, server: Server, span: tuple, lost: bool) -> None:
        with self._lock:
            marker = self._open.get(server.url)
            if marker is None:
                self._seq += 1
                marker = stale.StaleRange(
                    server.url, '%s:%d' % (self._token, self._seq),
                    time.time_ns(), span[0], stale.OPEN, stale.OPEN_STATE)
                LOG.warning('replica server %s missed points from %s on: '
                            'recorded as a stale range on the other servers'
                            ', so reads skip it there until they are '
                            'written', server.url, _when(span[0]))
                changed = True
            else:
                changed = span[0] < marker.lo or (
                    lost and marker.state != stale.LOST)
            self._newest[server.url] = max(self._newest.get(server.url,
                                                            span[1]), span[1])
            if changed:
                marker = marker.with_state(
                    stale.LOST if lost or marker.state == stale.LOST
                    else stale.OPEN_STATE)
                marker = dataclasses.replace(marker,
                                             lo=min(marker.lo, span[0]))
                self._open[server.url] = marker
                self._dirty.update((server.url, s) for s in self.servers
                                   if s != server)
        if lost and self._stats is not None:
            self._stats.add(None, 'replica_points_lost')
        if changed:
            self.flush()

    def reborn(self, server: Server, why: str) -> None:
        """*server* lost what it held: stale over all time until repaired."""
        LOG.error('replica server %s %s: every tenant on it is read from '
                  'its other replicas until "monasca-persister-dbpt-migrate '
                  '--repair" rebuilds it', server.url, why)
        with self._lock:
            self._seq += 1
            marker = stale.StaleRange(
                server.url, '%s:%d:empty' % (self._token, self._seq),
                time.time_ns(), stale.ALL_TIME[0], time.time_ns(), stale.LOST,
                time.time_ns())
            self._closed_write(marker)

    # -- the timer ---------------------------------------------------------

    def tick(self) -> None:
        """Close the markers whose server caught up; write what changed;
        look at the servers' ids now and then."""
        with self._lock:
            open_now = list(self._open.items())
        for url, marker in open_now:
            server = next((s for s in self.servers if s.url == url), None)
            if server is None or self._writer.is_down(server) or \
                    self.waiting(server):
                continue
            with self._lock:
                if self._open.get(url) is not marker:
                    continue  # extended meanwhile: look again next tick
                del self._open[url]
                newest = self._newest.pop(url, marker.lo)
                if marker.state == stale.LOST:
                    closed = marker.with_state(stale.LOST, hi=newest)
                else:
                    closed = marker.with_state(stale.CLEAR, hi=newest)
                self._closed_write(closed)
            LOG.warning('replica server %s caught up: %s', url,
                        'its stale range is clear' if closed.state ==
                        stale.CLEAR else 'points were dropped for it, so '
                        'its range stays stale until --repair copies it')
        self.flush()
        if time.monotonic() >= self._next_ids:
            self._next_ids = time.monotonic() + IDENTITY_EVERY
            self.check_ids()

    def _closed_write(self, marker: stale.StaleRange) -> None:
        """Called with the lock held: a marker no longer changes; written
        until every other server has it."""
        self._closed[marker.key] = marker
        self._dirty.update((marker.key, s) for s in self.servers
                           if s.url != marker.server)

    def flush(self) -> None:
        """Write every changed marker to the servers that lack it."""
        with self._lock:
            dirty = list(self._dirty)
        for what, target in dirty:
            with self._lock:
                if isinstance(what, tuple):
                    marker = self._closed.get(what)
                else:
                    marker = self._open.get(what)
            if marker is None or self._writer.is_down(target):
                if marker is None:
                    with self._lock:
                        self._dirty.discard((what, target))
                continue
            if self._write(target, marker):
                with self._lock:
                    self._dirty.discard((what, target))
        with self._lock:
            waiting = {w for w, _ in self._dirty if isinstance(w, tuple)}
            for key in list(self._closed):
                if key not in waiting:
                    del self._closed[key]

    def _write(self, target: Server, marker: stale.StaleRange) -> bool:
        session = self._writer.session(target)
        try:
            if target not in self._created:
                session.post(target.url + '/query', data={
                    'q': 'CREATE DATABASE %s' % quote_ident(stale.DATABASE)},
                    timeout=MARKER_TIMEOUT).raise_for_status()
                self._created.add(target)
            response = session.post(
                target.url + '/write', params={'db': stale.DATABASE,
                                               'precision': 'ns'},
                data=stale.marker_line(marker).encode('utf-8'),
                timeout=MARKER_TIMEOUT)
        except requests.RequestException as exc:
            self._created.discard(target)
            self._throttle.log(('marker', target.url), logging.WARNING,
                               'cannot record the stale range of %s on %s '
                               '(%s): tried again', marker.server,
                               target.url, str(exc)[:200])
            return False
        if response.status_code == 404 or 'not found' in response.text:
            self._created.discard(target)
            return False
        return response.status_code == 204

    # -- ids -----------------------------------------------------------------

    def check_ids(self, only: Optional[Server] = None) -> None:
        """A server whose id is gone came back empty (one thread at a
        time: several writes find it at once)."""
        with self._ids_lock:
            self._check_ids(only)

    def _check_ids(self, only: Optional[Server]) -> None:
        for server in [only] if only is not None else list(self._ids):
            known = self._ids.get(server)
            if known is None or self._writer.is_down(server):
                continue
            try:
                ids = identity.read_ids(self._writer, server, 0.0)
            except Exception:  # noqa: BLE001 - asked again later
                continue
            if known in ids:
                continue
            try:
                identity.ensure_id(self._writer, server, 0.0)
                self._ids[server] = identity.read_ids(self._writer, server,
                                                      0.0)[0]
            except Exception:  # noqa: BLE001 - asked again later
                self._ids.pop(server, None)
            self.reborn(server, 'answers without its server id (it came '
                        'back without its data)')
            self.flush()


def _when(ns: int) -> str:
    return time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime(ns / 1e9))
