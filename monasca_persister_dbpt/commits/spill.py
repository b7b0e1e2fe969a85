"""Points of a down server on local disk, so that its outage costs nobody
else anything, however long it lasts.

Kafka commits one offset per partition, and every partition carries every
tenant: records of a down server's tenants left uncommitted in Kafka hold
back the commits of all the tenants behind them, and memory can hold them
only so long. So, as influx-proxy does, a write that finds its server down
appends the points to a file of that server (``[dbpt] spill_dir``) and
fsyncs it; from then on they count as stored and their records are
committed. While a server has points here, its new points join them, so
each tenant's points reach it in the order they came. A timer replays the
files oldest first, each point to its tenant's placement *now* (a tenant
moved meanwhile takes its points along), and records how far it got (a
``.pos`` file beside each segment, fsynced after each chunk written): a
restart replays from there, rewriting at most one chunk (identical points
merge in InfluxDB).

Each worker process appends to segments of its own, locked with ``flock``
while it lives; the segments of a worker that ended are unlocked, and any
worker adopts them. A segment is ``<time>-<pid>.spill`` in a folder per
server, one entry a line: ``<spill time>\\t<tenant>\\t<line protocol>``.
A torn last line (a crash before its fsync) was never committed: it is
skipped, and Kafka gives its record again.
"""

from __future__ import annotations

import dataclasses
import fcntl
import glob
import logging
import os
import re
import threading
import time
from typing import Optional

from monasca_persister_dbpt.influx.writer import WriteFailed
from monasca_persister_dbpt.placement import InvalidTenantId, Server
from monasca_persister_dbpt.stats import LogThrottle

LOG = logging.getLogger(__name__)

#: A segment is sealed (no more appends) past this size.
SEGMENT_BYTES = 64 * 1024 * 1024
#: Most bytes read and written per replay step.
REPLAY_BYTES = 2 * 1024 * 1024
#: Seconds between two looks for segments of workers that ended.
ADOPT_EVERY = 30.0


class SpillUnusable(ValueError):
    """The spill folder cannot be written; the message names the option."""


def server_key(server: Server) -> str:
    host = re.sub(r'[^A-Za-z0-9.-]', '_', server.host)
    return '%s_%d%s' % (host, server.port, '_tls' if server.ssl else '')


@dataclasses.dataclass
class _Segment:
    path: str
    key: str
    fd: int                  # holds the flock (and appends, if own)
    own: bool                # this process appends to it
    size: int = 0
    pos: int = 0             # bytes replayed
    points: int = 0          # entries not replayed yet
    oldest: Optional[float] = None   # spill time of the first of them
    sealed: bool = False

    @property
    def drained(self) -> bool:
        return self.pos >= self.size


class Spill:
    def __init__(self, directory: str, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        try:
            os.makedirs(directory, exist_ok=True)
            probe = os.path.join(directory, '.probe-%d' % os.getpid())
            with open(probe, 'w') as handle:
                handle.write('x')
            os.remove(probe)
        except OSError as exc:
            raise SpillUnusable('[dbpt] spill_dir %s cannot be written: %s'
                                % (directory, exc)) from None
        self._lock = threading.Lock()
        #: key -> segments, oldest first
        self._segments: dict[str, list[_Segment]] = {}
        #: key -> server URL (as the folder says)
        self._urls: dict[str, str] = {}
        self._bytes = 0
        self._retry_at: dict[str, float] = {}
        self._delay: dict[str, float] = {}
        self._next_adopt = 0.0
        self._seq = 0
        self._throttle = LogThrottle(logger=LOG)
        self.adopt()

    # -- writing (writer threads) ------------------------------------------

    def pending(self, server: Server) -> bool:
        """Whether *server* has points here that it has not taken yet: its
        new points must join them, not pass them."""
        return bool(self._segments.get(server_key(server)))

    def append(self, server: Server, tenant: str, lines) -> bool:
        """Store *lines* durably; False when the spill is full or cannot
        be written (the caller keeps them in memory)."""
        now = time.time()
        data = ''.join('%.3f\t%s\t%s\n' % (now, tenant, line)
                       for line in lines).encode('utf-8')
        key = server_key(server)
        with self._lock:
            if self._bytes + len(data) > self.max_bytes:
                self._throttle.log(
                    ('full', key), logging.ERROR,
                    'spill %s is full ([dbpt] spill_max_bytes %d): points '
                    'of InfluxDB at %s are held in memory now, and past '
                    '[dbpt] held_points_max the persister waits', self
                    .directory, self.max_bytes, server.url)
                return False
            try:
                segment = self._active(key, server)
                os.write(segment.fd, data)
                os.fsync(segment.fd)
            except OSError as exc:
                self._throttle.log(
                    ('error', key), logging.ERROR,
                    'cannot write the spill %s (%s): points of InfluxDB at '
                    '%s are held in memory', self.directory, exc, server.url)
                return False
            segment.size += len(data)
            segment.points += len(lines)
            if segment.oldest is None:
                segment.oldest = now
            self._bytes += len(data)
            if segment.size >= SEGMENT_BYTES:
                segment.sealed = True
        return True

    def _active(self, key: str, server: Server) -> _Segment:
        segments = self._segments.setdefault(key, [])
        if segments and segments[-1].own and not segments[-1].sealed:
            return segments[-1]
        folder = os.path.join(self.directory, key)
        os.makedirs(folder, exist_ok=True)
        url_file = os.path.join(folder, 'server')
        if not os.path.exists(url_file):
            with open(url_file, 'w') as handle:
                handle.write(server.url + '\n')
        self._urls[key] = server.url
        self._seq += 1
        path = os.path.join(folder, '%020d-%d-%d.spill' % (
            time.time_ns(), os.getpid(), self._seq))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        segment = _Segment(path, key, fd, own=True)
        segments.append(segment)
        if len(segments) == 1:
            LOG.warning('InfluxDB at %s is down: its points go to %s and '
                        'their records are committed; they are written when '
                        'it answers', server.url, folder)
        return segment

    # -- segments of workers that ended ------------------------------------

    def adopt(self) -> None:
        """Take the segments nobody holds (a worker that ended)."""
        self._next_adopt = time.monotonic() + ADOPT_EVERY
        known = {s.path for segs in self._segments.values() for s in segs}
        for path in sorted(glob.glob(os.path.join(self.directory, '*',
                                                  '*.spill'))):
            if path in known:
                continue
            try:
                fd = os.open(path, os.O_RDWR)
            except OSError:
                continue  # replayed and removed meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue  # a live worker's
            key = os.path.basename(os.path.dirname(path))
            segment = _Segment(path, key, fd, own=False, sealed=True,
                               size=os.fstat(fd).st_size, pos=_read_pos(path))
            segment.points, segment.oldest, whole = _scan(path, segment.pos)
            segment.size = whole  # a torn last line is left out
            with self._lock:
                self._segments.setdefault(key, []).append(segment)
                self._segments[key].sort(key=lambda s: os.path.basename(
                    s.path))
                self._bytes += segment.size - segment.pos
                self._urls.setdefault(key, _read_url(path))
            LOG.warning('adopted %s: %d points of %s left by a worker that '
                        'ended; they are written when that server answers',
                        path, segment.points, self._urls[key])

    # -- replay (the timer thread) -----------------------------------------

    def replay(self, writer, placements, backoff_max: float,
               budget: float = 1.0) -> int:
        """Write what the servers take now, oldest first, for at most about
        *budget* seconds; the points written."""
        if time.monotonic() >= self._next_adopt:
            self.adopt()
        written = 0
        deadline = time.monotonic() + budget
        for key in list(self._segments):
            while time.monotonic() < deadline:
                if time.monotonic() < self._retry_at.get(key, 0.0):
                    break
                step = self._replay_one(key, writer, placements)
                if step is None:
                    break
                if step < 0:
                    delay = min(max(self._delay.get(key, 0.0) * 2, 0.25),
                                backoff_max)
                    self._delay[key] = delay
                    self._retry_at[key] = time.monotonic() + delay
                    break
                self._delay.pop(key, None)
                written += step
        return written

    def _replay_one(self, key: str, writer, placements) -> Optional[int]:
        """One chunk of the oldest segment of *key*: its points, -1 when
        its server did not take them, None when nothing is left."""
        with self._lock:
            segments = self._segments.get(key)
            if not segments:
                self._segments.pop(key, None)
                return None
            segment = segments[0]
            if segment.drained and (segment.sealed or not segment.own or
                                    len(segments) > 1):
                self._finish(key, segment)
                return 0
            if segment.drained:
                # Caught up with this worker's own appends: done (under
                # the lock, so no append slips in between).
                segment.sealed = True
                self._finish(key, segment)
                return 0
            start, end = segment.pos, segment.size
        with open(segment.path, 'rb') as handle:
            handle.seek(start)
            data = handle.read(min(end - start, REPLAY_BYTES))
        cut = data.rfind(b'\n') + 1
        if cut == 0:
            if len(data) >= REPLAY_BYTES:
                raise RuntimeError('%s: an entry longer than %d bytes'
                                   % (segment.path, REPLAY_BYTES))
            return None  # only a torn line (cannot happen to our own)
        data = data[:cut]
        by_tenant: dict[str, list] = {}
        oldest_next = None
        for raw in data.decode('utf-8').splitlines():
            spilled, tenant, line = raw.split('\t', 2)
            by_tenant.setdefault(tenant, []).append(line)
        try:
            for tenant, lines in by_tenant.items():
                try:
                    placement = placements.place(tenant)
                except InvalidTenantId as exc:
                    LOG.error('spilled points of tenant %r dropped: %s',
                              tenant, exc)
                    continue
                if placements.blocked(tenant):
                    # Spilled before the tenant was blocked (dropped).
                    writer.stats.add(tenant, 'refused_blocked', len(lines))
                    self._throttle.log(
                        ('blocked', tenant), logging.WARNING,
                        'refused %d spilled point(s) of tenant %s: it is '
                        'blocked in the tenant overrides file', len(lines),
                        tenant)
                    continue
                if placement.replicas:
                    # This folder's replica, if it still is one.
                    url = self._urls.get(key)
                    placement = next((c for c in placement.copies
                                      if c.server.url == url), placement)
                writer.write(placement, lines, retry_for=0.0,
                             fail_fast=False)
        except WriteFailed as exc:
            self._throttle.log(('down', key), logging.INFO,
                               'spilled points for %s wait: %s',
                               self._urls.get(key, key), str(exc)[:200])
            return -1
        points = sum(len(v) for v in by_tenant.values())
        with self._lock:
            segment.pos = start + len(data)
            segment.points -= points
            self._bytes -= len(data)
            if segment.pos < segment.size:
                oldest_next = _first_time(segment.path, segment.pos)
            segment.oldest = oldest_next
        _write_pos(segment.path, segment.pos)
        return points

    def _finish(self, key: str, segment: _Segment) -> None:
        """Called with the lock held: a segment fully written."""
        self._segments[key].remove(segment)
        for path in (segment.path, segment.path + '.pos'):
            try:
                os.remove(path)
            except OSError:
                pass
        os.close(segment.fd)
        if not self._segments[key]:
            del self._segments[key]
            LOG.warning('spill of %s written: its new points go to it '
                        'directly again', self._urls.get(key, key))

    # -- what an operator sees ---------------------------------------------

    def waiting(self) -> dict[str, dict]:
        """URL -> points, bytes and the oldest point's age (s)."""
        now = time.time()
        out: dict[str, dict] = {}
        with self._lock:
            for key, segments in self._segments.items():
                url = self._urls.get(key, key)
                entry = out.setdefault(url, {'points': 0, 'bytes': 0,
                                             'oldest_seconds': 0.0})
                for s in segments:
                    entry['points'] += s.points
                    entry['bytes'] += s.size - s.pos
                    if s.oldest is not None:
                        entry['oldest_seconds'] = max(
                            entry['oldest_seconds'], round(now - s.oldest, 1))
        return out

    @property
    def used_bytes(self) -> int:
        return self._bytes

    def close(self) -> None:
        with self._lock:
            for segments in self._segments.values():
                for s in segments:
                    try:
                        os.close(s.fd)
                    except OSError:
                        pass
            self._segments.clear()


def _read_pos(path: str) -> int:
    try:
        with open(path + '.pos') as handle:
            return int(handle.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def _write_pos(path: str, pos: int) -> None:
    tmp = path + '.pos.tmp'
    with open(tmp, 'w') as handle:
        handle.write('%d\n' % pos)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path + '.pos')


def _read_url(path: str) -> str:
    try:
        with open(os.path.join(os.path.dirname(path), 'server')) as handle:
            return handle.read().strip()
    except OSError:
        return os.path.basename(os.path.dirname(path))


def _scan(path: str, pos: int) -> tuple[int, Optional[float], int]:
    """Entries after *pos*, the time of the first, and where the last
    whole line ends."""
    points, oldest, end = 0, None, pos
    with open(path, 'rb') as handle:
        handle.seek(pos)
        for raw in handle:
            if not raw.endswith(b'\n'):
                break
            if oldest is None:
                try:
                    oldest = float(raw.split(b'\t', 1)[0])
                except ValueError:
                    oldest = None
            points += 1
            end += len(raw)
    return points, oldest, end


def _first_time(path: str, pos: int) -> Optional[float]:
    with open(path, 'rb') as handle:
        handle.seek(pos)
        raw = handle.readline()
    try:
        return float(raw.split(b'\t', 1)[0])
    except ValueError:
        return None
