"""Each tenant's points, kept across host flushes until written.

InfluxDB's cost is per write request much more than per point, and a host
batch over many tenants gives each only a few points. So a tenant's points
are kept here across flushes and written in one request when there are
``[dbpt] coalesce_points`` of them, or when the oldest is ``[dbpt]
max_delay`` seconds old (a timer thread sees to that, so a quiet tenant is
written on time whatever the host does), or when everything buffered
passes ``[dbpt] buffered_points_max``. Kafka keeps every record until the
watermark passes it (:mod:`.watermark`), so nothing here needs a disk.

A server that stops answering for ``[dbpt] hold_after`` seconds is marked
down; its tenants' points stay here, *held*, and are tried again with
backoff (one request at a time, even though the server is marked down)
until it answers. Held points follow their tenant: each attempt places the
tenant again, so a tenant moved in the tenant servers file takes them to
its new server. Only the partitions holding those records wait; every other
tenant is written and committed meanwhile.

With a spill (:mod:`.spill`, ``[dbpt] spill_dir``), a write that finds
its server down does not hold its points here: they go to that server's
spill file, fsynced, and count as written, so their records are committed
and nothing waits for that server, for however long it is down. Points
are held here only when the spill is full or cannot be written.

Bounds, whatever happens: ``buffered_points_max`` for everything here and
``held_points_max`` for what a down server holds. Past them, the host's
thread waits for writes (up to ``[dbpt] retry_timeout``) and then fails the
batch: the worker exits uncommitted and its records are read again.
"""

from __future__ import annotations

import logging
import operator
import threading
import time
from typing import Optional

from monasca_persister_dbpt.commits.memory import PointMemory, SAMPLE_POINTS
from monasca_persister_dbpt.commits.spill import Spill
from monasca_persister_dbpt.commits.stale_ranges import StaleRecorder
from monasca_persister_dbpt.commits.watermark import JointTicket, Ticket
from monasca_persister_dbpt.commits.watermark import may_abandon
from monasca_persister_dbpt.influx.write_process import WriteProcess
from monasca_persister_dbpt.influx.writer import InfluxWriter, WriteFailed
from monasca_persister_dbpt.placement import PlacementMap
from monasca_persister_dbpt.stats import LogThrottle, Stats

LOG = logging.getLogger(__name__)


#: Over buffered_points_max, this share of it is written at once
#: (the largest buffers): see TenantBuffers._relieve. A fifth keeps
#: enough requests in flight that influxd still has work while the host's
#: thread reads the next batch (a tenth left it idle meanwhile: the host
#: waited for room a fifth of the time, bench/persister_e2e.py).
RELIEVE_PARTS = 5
_size = operator.itemgetter(0)


def _tenant(key):
    """A buffer's tenant: the key is the tenant for its first replica,
    (tenant, replica) for the others."""
    return key[0] if type(key) is tuple else key


class _Buffer:
    __slots__ = ('lines', 'tickets', 'since', 'held', 'retry_at', 'delay',
                 'inflight', 'held_since', 'joint')

    def __init__(self, now: float) -> None:
        self.lines: list = []
        self.tickets: list = [Ticket()]
        self.since = now
        self.held = False       # its server did not take the last write
        self.retry_at = 0.0
        self.delay = 0.0
        self.inflight = 0       # points of a write under way
        self.held_since = 0.0   # time.time() it was first held
        self.joint = None       # the replicas' ticket of the last point

    @property
    def busy(self) -> bool:
        return self.inflight > 0


class TenantBuffers:
    def __init__(self, placements: PlacementMap, writer: InfluxWriter,
                 stats: Stats, *, chunk_points: int, coalesce_points: int,
                 max_delay: float, buffered_max: int, held_max: int,
                 hold_after: Optional[float],
                 spill: Optional[Spill] = None,
                 stale: Optional[StaleRecorder] = None,
                 stale_after: float = 300.0,
                 poster: Optional[WriteProcess] = None,
                 buffered_bytes: Optional[int] = None) -> None:
        self._placements = placements
        #: Where a buffer's write is posted first (a child process, see
        #: influx/write_process.py); its own path takes what that fails.
        self.poster = poster
        self._writer = writer
        self._stats = stats
        self._chunk = max(1, chunk_points)
        self.coalesce_points = max(1, coalesce_points)
        self.max_delay = max_delay
        #: buffered_points_max counts a point once, whatever its replicas:
        #: they share its line (a list slot each), so each replica's
        #: buffer coalesces as much as one copy would.
        self._buffered_option = buffered_max
        copies = max(1, getattr(getattr(placements, 'server_map', None),
                                'replicas', 1))
        self._buffered_max = buffered_max * copies
        #: buffered_memory_mb: the bound in points its budget allows at
        #: the sampled size of a point (None: points only).
        self.memory = PointMemory(buffered_max, buffered_bytes, copies) \
            if buffered_bytes else None
        #: Points to buffer before the next sample of their size.
        self._sample_in = float('inf')
        if self.memory is not None:
            self._buffered_max = self.memory.bound
            self._sample_in = 0
        self._held_max = held_max
        # None: a write retries for the full retry_timeout and failures
        # are raised (commits cannot wait for held points).
        self._hold_after = hold_after
        #: Where a down server's points go instead of memory (only when
        #: points may be held: commits follow the watermark).
        self.spill = spill if hold_after is not None else None
        #: Where the ranges a replica missed are recorded (replicas only).
        self.stale = stale
        self._stale_after = stale_after
        self._lock = threading.Condition()
        self._buffers: dict[str, _Buffer] = {}
        self._points = 0          # buffered, held and being written
        self._held_tenants: set = set()
        self._failed: Optional[BaseException] = None
        #: Tenants whose write failed; once all are written, the failure
        #: is over and fails nothing.
        self._failing: set = set()
        self._timer: Optional[threading.Thread] = None
        self._closed = False
        #: Called at every tick of the timer (the outage report).
        self.on_tick: list = []
        #: Tenants whose points are written at once, not coalesced (near
        #: their series cap: see limits/series.py).
        self.urgent: set = set()
        # A down server holds thousands of tenants: a line a minute per
        # server says so, with how many were not logged.
        self._throttle = LogThrottle(logger=LOG)
        if self.spill is not None:
            # Replays what this worker adopts, even if it never gets a
            # record (an idle topic's worker may adopt another's spill).
            self._start_timer(held=True)
        #: Seconds the host's thread waited for room (buffered_points_max).
        self.waited_room = 0.0
        stats.gauge('points_buffered', lambda: self._points)
        stats.gauge('buffered_points_bound', lambda: self._buffered_max)
        stats.gauge('room_wait_seconds', lambda: round(self.waited_room, 3))
        stats.gauge('held_points', self.held)
        stats.gauge('oldest_buffered_seconds', self.oldest_age)

    # -- the host's thread -------------------------------------------------

    def add(self, tenant: str, line: str):
        """Buffer one point; its ticket is done once it is written (to
        each of the tenant's replicas)."""
        ticket = self.put(tenant, (line,))
        self.relieve()
        return ticket

    def put(self, tenant: str, lines):
        """Buffer several points of a tenant under one ticket, without
        waiting for room: the caller tracks the ticket first, then calls
        :meth:`relieve` (a wait that fails leaves nothing untracked)."""
        copies = len(self._placements.place(tenant).copies) \
            if self._placements.replicated else 1
        if copies == 1:
            return self._put_each(((tenant, lines),))[0]
        return self._add_replicated(tenant, lines, copies)

    def put_many(self, groups) -> list:
        """:meth:`put` for each ``(tenant, lines)`` of *groups*, under one
        lock: a batch over many tenants brings one or two points for each,
        and a lock, a call and a check a tenant cost more than the points.
        The tickets, in the order of *groups*. (One tenant's :meth:`put`
        comes here too: one rule for when a buffer is written.)"""
        if self._placements.replicated:
            return [self.put(tenant, lines) for tenant, lines in groups]
        return self._put_each(groups)

    def _put_each(self, groups) -> list:
        """:meth:`put_many` for tenants of one copy each."""
        tickets = []
        ship = []   # (tenant, what _take took), taken as put would
        held = []
        coalesce = self.coalesce_points
        urgent = self.urgent
        buffers = self._buffers
        added = 0
        with self._lock:
            now = None
            for tenant, lines in groups:
                buf = buffers.get(tenant)
                if buf is None:
                    if now is None:
                        now = time.monotonic()
                    buf = buffers[tenant] = _Buffer(now)
                buf.lines.extend(lines)
                added += len(lines)
                tickets.append(buf.tickets[-1])
                if buf.held:
                    held.append((tenant, len(lines)))
                elif (len(buf.lines) >= coalesce or tenant in urgent) and \
                        not buf.inflight:
                    # Taken now: a later group of the same tenant (another
                    # partition) starts a new ticket, as after a put.
                    ship.append((tenant, self._take(tenant)))
            self._points += added
        # A few points a sample: the host's thread pays for it.
        sample_in = self._sample_in - added
        if sample_in > 0:
            self._sample_in = sample_in
        else:
            self._sample(groups)
        for tenant, count in held:  # join the held points of their tenant
            self._stats.add(tenant, 'points_held', count)
        for tenant, taken in ship:
            self._submit(tenant, taken)
        return tickets

    def _sample(self, groups) -> None:
        self._sample_in = SAMPLE_POINTS
        self._buffered_max = self.memory.observe(groups)

    def relieve(self) -> None:
        """Wait for room when over buffered_points_max."""
        if self._points > self._buffered_max:
            self._relieve()

    def _add_replicated(self, tenant: str, lines,
                        copies: int) -> JointTicket:
        """:meth:`_add` for every replica of the tenant under one lock;
        the replicas share the lines (one string, a list slot each)."""
        ship, held = [], 0
        with self._lock:
            parts = []
            for slot in range(copies):
                key = tenant if slot == 0 else (tenant, slot)
                buf = self._buffers.get(key)
                if buf is None:
                    buf = self._buffers[key] = _Buffer(time.monotonic())
                buf.lines.extend(lines)
                parts.append(buf.tickets[-1])
                if buf.held:
                    held += len(lines)
                elif (len(buf.lines) >= self.coalesce_points or
                      tenant in self.urgent) and not buf.busy:
                    ship.append(key)
            self._points += copies * len(lines)
            parts = tuple(parts)
            first = self._buffers[tenant]
            joint = first.joint
            if joint is None or joint.parts != parts:
                joint = first.joint = JointTicket(parts)
        self._sample_in -= len(lines)
        if self._sample_in <= 0:
            self._sample(((tenant, lines),))
        if held:
            self._stats.add(tenant, 'points_held', held)
        for key in ship:
            self._ship(key)
        return joint

    def flush(self, everything: bool) -> None:
        """At the host's flush: write what is due (*everything*: all of it,
        and wait for it). Raises if a write could not be held."""
        self._start_timer()
        self._raise_failure()
        self._ship_due(force=everything)
        while everything:
            # Each write is bounded by its own retries: no deadline here.
            self._wait(lambda: all(b.busy is False for b in
                                   self._buffers.values()), float('inf'))
            if self._failed is not None or not any(
                    b.lines and not b.held for b in
                    list(self._buffers.values())):
                break
            # Points that came in while their tenant was being written.
            self._ship_due(force=True)
        if self.held() > self._held_max:
            self._wait(lambda: self.held() <= self._held_max)
        self._raise_failure()

    # -- writing -----------------------------------------------------------

    def _ship_due(self, force: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            due = []
            stale_before = time.time() - self._stale_after
            given_up = []
            for key, buf in self._buffers.items():
                if buf.busy or not buf.lines:
                    continue
                if buf.held:
                    if self.stale is not None and buf.held_since and \
                            buf.held_since < stale_before:
                        given_up.append(key)
                    elif now >= buf.retry_at or not self._writer.is_down(
                            self._placement(key).server):
                        due.append(key)
                elif force or len(buf.lines) >= self.coalesce_points or (
                        self.max_delay > 0 and
                        now - buf.since >= self.max_delay):
                    due.append(key)
        for key in given_up:
            if not self._abandon(key):
                due.append(key)
        self._ship_many(due)

    def _abandon(self, key) -> bool:
        """A replica held past [dbpt] replica_stale_after: drop its points
        for that replica alone and record them as a stale range, when
        another replica of the tenant is up and every point keeps a replica
        that has not given it up; True if done."""
        tenant = _tenant(key)
        placement = self._placements.place(tenant)
        mine = self._placement(key).server
        with self._lock:
            buf = self._buffers.get(key)
            if buf is None or buf.busy or not buf.held or not buf.lines:
                return False
            others = [k for k in [tenant] + [(tenant, i) for i in range(
                1, len(placement.copies))] if k != key]
            if not any(not self._writer.is_down(self._placement(k).server)
                       and not (self._buffers.get(k) is not None and
                                self._buffers[k].held) for k in others):
                return False
            if not all(may_abandon(t) for t in buf.tickets):
                return False
            lines, tickets = buf.lines, buf.tickets
            buf.lines, buf.tickets = [], [Ticket()]
            for ticket in tickets:
                ticket.abandoned = True
            self._points -= len(lines)
            self._held_tenants.discard(key)
            del self._buffers[key]
            self._lock.notify_all()
        self.stale.missed(mine, lines, lost=True)
        self._stats.add(tenant, 'replica_points_dropped', len(lines))
        self._throttle.log(
            ('abandoned', mine), logging.ERROR,
            'dropped %d points of tenant %s for its replica on %s, held past '
            '[dbpt] replica_stale_after (%.0f s): its other replicas hold '
            'them, and the range is recorded as stale until '
            '"monasca-persister-dbpt-migrate --repair" copies it',
            len(lines), tenant, mine.url, self._stale_after)
        return True

    def _ship_many(self, tenants: list) -> None:
        """Ship several tenants, creating their new databases first in a
        few batched requests rather than one round trip each."""
        ensure = getattr(self._writer, 'ensure_each', None)
        if ensure is not None and len(tenants) > 1:
            schema = self._writer.schema
            new = [p for p in (self._placement(t) for t in tenants)
                   if not schema.known(p) and schema.refused(p) is None]
            if new:
                # What fails here is settled by each write on its own.
                ensure(new, retry_for=self._hold_after)
        for tenant in tenants:
            self._ship(tenant)

    def _relieve(self) -> None:
        """Over buffered_points_max: write the largest buffers, a fifth of
        the bound at a time, and wait for room (a down server's points
        count too). Writing a little at a time, always the largest, lets
        every buffer grow towards twice its even share before it is
        written: requests of up to ``2 x buffered_points_max / tenants``
        points, where writing half of them at once gave about the even
        share."""
        with self._lock:
            sizes = [(len(b.lines), k) for k, b in self._buffers.items()
                     if not b.busy and not b.held and b.lines]
        waiting = sum(n for n, _ in sizes)
        keep = self._buffered_max - max(1, self._buffered_max //
                                        RELIEVE_PARTS)
        sizes.sort(key=_size, reverse=True)
        for size, key in sizes:
            if waiting <= keep:
                break
            waiting -= size
            self._ship(key)
        if self._points > self._buffered_max:
            before = time.monotonic()
            try:
                self._wait(lambda: self._points <= self._buffered_max)
            finally:
                self.waited_room += time.monotonic() - before

    def _wait(self, done, timeout: Optional[float] = None) -> None:
        bound = self._writer.retry_timeout if timeout is None else timeout
        deadline = time.monotonic() + bound
        with self._lock:
            while not done():
                if self._failed is not None:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WriteFailed(
                        '%d points buffered, %d of them held for servers '
                        'that are down, still not written after %.0fs '
                        '([dbpt] buffered_points_max %d%s, held_points_max '
                        '%d)' % (self._points, self.held(), bound,
                                 self._buffered_option, self._memory_words(),
                                 self._held_max))
                self._lock.wait(min(left, 0.5))

    def _memory_words(self) -> str:
        memory = self.memory
        if memory is None or memory.bound >= self._buffered_option * \
                memory.copies:
            return ''
        return ', or %d at %.0f bytes a point within buffered_memory_mb ' \
            '%d' % (memory.bound // memory.copies, memory.point_bytes(),
                    memory.budget_bytes // 2 ** 20)

    def _placement(self, key):
        # Placed again each time: the tenant servers file may have moved it.
        if type(key) is not tuple:
            return self._placements.place(key)
        copies = self._placements.place(key[0]).copies
        # A replica no longer configured: its points go to the first.
        return copies[key[1]] if key[1] < len(copies) else copies[0]

    def _ship(self, key) -> None:
        """Hand a tenant's buffer (one replica's) to the writer pool."""
        with self._lock:
            taken = self._take(key)
        if taken is not None:
            self._submit(key, taken)

    def _take(self, key) -> Optional[tuple]:
        """Under the lock: a buffer's points and tickets to write, a new
        ticket for what comes next (None if busy or empty)."""
        buf = self._buffers.get(key)
        if buf is None or buf.busy or not buf.lines:
            return None
        taken = (buf.lines, buf.tickets, buf.held)
        buf.lines, buf.tickets = [], [Ticket()]
        buf.inflight = len(taken[0])
        buf.since = time.monotonic()
        return taken

    def _submit(self, key, taken: tuple) -> None:
        lines, tickets, held = taken
        placement = self._placement(key)
        poster = self.poster
        if poster is not None and not held and len(lines) <= self._chunk \
                and poster.usable and self._plain(key, placement):
            poster.submit(
                placement.server, {'db': placement.database,
                                   'precision': 'ms'}, lines,
                lambda status, text: self._posted(key, placement, lines,
                                                  tickets, status, text))
            return
        self._writer.submit_call(self._write, key, placement, lines,
                                 tickets, held)

    def _plain(self, key, placement) -> bool:
        """Whether nothing but a POST stands between a buffer and its
        database: it exists, its server is up, nothing waits before it in
        the spill, its tenant is not blocked."""
        schema = self._writer.schema
        return schema.known(placement) and schema.refused(placement) is None \
            and not self._writer.is_down(placement.server) and not (
                self.spill is not None and
                self.spill.pending(placement.server)) and \
            not self._placements.blocked(_tenant(key))

    def _posted(self, key, placement, lines, tickets, status, text) -> None:
        """The write process's answer: stored, or written again here (what
        InfluxDB refused, a server that did not answer, a lost process),
        where every failure is handled as if it were the first try."""
        if status != 204:
            self._writer.submit_call(self._write, key, placement, lines,
                                     tickets, False)
            return
        self._writer.count_written(_tenant(key), len(lines))
        if self._settle(key, len(lines), tickets, False):
            self._ship(key)

    def _write(self, key, placement, lines, tickets, held) -> None:
        """In a writer thread: all of a buffer, in chunks."""
        tenant = _tenant(key)
        if self._placements.blocked(tenant):
            # Buffered or held before the block: refused now, so that a
            # dropped tenant's database is not made again.
            self._stats.add(tenant, 'refused_blocked', len(lines))
            self._throttle.log(
                ('blocked', tenant), logging.WARNING,
                'refused %d buffered point(s) of tenant %s: it is blocked '
                'in the tenant overrides file', len(lines), tenant)
            self._settle(key, len(lines), tickets, held)
            return
        if self.spill is not None and self.spill.pending(placement.server) \
                and self._spilled(key, placement, lines, tickets, held):
            return  # behind the points its server has not taken yet
        done = 0
        try:
            for start in range(0, len(lines), self._chunk):
                chunk = lines[start:start + self._chunk]
                if held:
                    # One attempt even though the server is marked down.
                    self._writer.write(placement, chunk, retry_for=0.0,
                                       fail_fast=False)
                else:
                    self._writer.write(placement, chunk,
                                       retry_for=self._hold_after)
                done = start + len(chunk)
        except Exception as exc:  # noqa: BLE001 - kept and retried
            self._keep(key, placement, lines[done:], tickets, held, exc,
                       written=done)
            return
        if held:
            self._stats.add(tenant, 'points_replayed', len(lines))
            self._throttle.log(
                ('replayed', placement.server), logging.INFO,
                '%d held points of tenant %s written to %s',
                len(lines), tenant, placement.server.url)
        if self._settle(key, len(lines), tickets, held):
            self._ship(key)  # enough came in meanwhile for another

    def _settle(self, key, points, tickets, was_held) -> bool:
        """A buffer's points are stored (written or spilled): their
        records may be committed. True when enough came in meanwhile for
        another request."""
        for ticket in tickets:
            ticket.done = True
        again = False
        with self._lock:
            buf = self._buffers.get(key)
            self._points -= points
            if self._failing:
                self._failing.discard(key)
                if not self._failing:
                    self._failed = None  # all written since: nothing lost
            if was_held:
                self._held_tenants.discard(key)
            if buf is not None:
                buf.inflight = 0
                buf.held = False
                buf.held_since = 0.0
                buf.delay = 0.0
                if not buf.lines:
                    del self._buffers[key]
                else:
                    again = len(buf.lines) >= self.coalesce_points or \
                        _tenant(key) in self.urgent
            self._lock.notify_all()
        return again

    def _spilled(self, key, placement, lines, tickets, was_held) -> bool:
        """Put *lines* in the spill of their server; True once they are
        there (their tickets are done: the records may be committed)."""
        tenant = _tenant(key)
        if self.stale is not None and placement.replicas:
            self.stale.missed(placement.server, lines)
        if not self.spill.append(placement.server, tenant, lines):
            return False
        self._stats.add(tenant, 'points_spilled', len(lines))
        self._settle(key, len(lines), tickets, was_held)
        self._start_timer(held=True)
        return True

    def _keep(self, key, placement, lines, tickets, was_held, exc,
              written) -> None:
        """A write that failed: its points go to the spill if there is one,
        else back in front of the tenant's buffer, held, to be tried
        again."""
        tenant = _tenant(key)
        if not isinstance(exc, WriteFailed):
            LOG.error('writing %d points of tenant %s: %r', len(lines),
                      tenant, exc)
        elif self.spill is not None:
            with self._lock:
                self._points -= written
            written = 0
            if self._spilled(key, placement, lines, tickets, was_held):
                return
        elif self.stale is not None and placement.replicas and \
                self._hold_after is not None:
            self.stale.missed(placement.server, lines)
        with self._lock:
            self._points -= written
            buf = self._buffers.get(key)
            if buf is None:
                buf = self._buffers[key] = _Buffer(time.monotonic())
            # Points added while this write was failing were not counted
            # as held: they are now.
            newly = len(lines) + len(buf.lines)
            buf.lines = lines + buf.lines
            buf.tickets = tickets + buf.tickets
            buf.inflight = 0
            if self._hold_after is None:
                # Commits cannot wait: the batch must fail uncommitted,
                # unless these points are written before it is flushed.
                self._failed = exc
                self._failing.add(key)
            elif not was_held:
                buf.held = True
                buf.held_since = buf.held_since or time.time()
                self._held_tenants.add(key)
                self._stats.add(tenant, 'points_held', newly)
                self._throttle.log(
                    ('holding', placement.server), logging.WARNING,
                    'holding %d points of tenant %s until InfluxDB at %s '
                    'answers; only the Kafka records behind them wait '
                    '(points_held counts them per tenant)', len(lines),
                    tenant, placement.server.url)
            buf.delay = min(max(buf.delay * 2, 0.25),
                            self._writer.backoff_max)
            buf.retry_at = time.monotonic() + buf.delay
            self._lock.notify_all()
        if buf.held:
            self._start_timer(held=True)

    def _raise_failure(self) -> None:
        with self._lock:
            exc, self._failed = self._failed, None
            self._failing.clear()
        if exc is not None:
            raise exc if isinstance(exc, WriteFailed) else WriteFailed(
                str(exc))

    # -- the timer ---------------------------------------------------------

    def _start_timer(self, held: bool = False) -> None:
        """The timer writes what is due by age and retries held points
        (it runs for held points even without coalescing)."""
        if self._timer is None and (self.max_delay > 0 or held or (
                self.spill is not None and self.spill.used_bytes)):
            self._timer = threading.Thread(target=self._tick, daemon=True,
                                           name='dbpt-coalesce')
            self._timer.start()

    def _tick(self) -> None:
        pause = min(max(self.max_delay / 4, 0.05), 1.0) if self.max_delay \
            else 0.1
        while not self._closed:
            idle = not self._buffers and (self.spill is None or
                                          not self.spill.used_bytes)
            time.sleep(max(pause, 1.0) if idle else pause)
            if self._closed:  # closed while it slept: no round more
                return
            try:
                self._ship_due()
            except Exception as exc:  # noqa: BLE001 - the timer must go on
                if isinstance(exc, RuntimeError) and 'shutdown' in str(exc):
                    # The writer's pool is gone (the process is exiting):
                    # nothing can be written, and what is buffered stays
                    # uncommitted, so it is read again after the restart.
                    return
                LOG.exception('writing buffered points')
            if self.spill is not None:
                try:
                    replayed = self.spill.replay(
                        self._writer, self._placements,
                        self._writer.backoff_max)
                    if replayed:
                        self._stats.add(None, 'points_replayed', replayed)
                except Exception:  # noqa: BLE001 - the timer must go on
                    LOG.exception('writing spilled points')
            for call in self.on_tick:
                try:
                    call()
                except Exception:  # noqa: BLE001 - the timer must go on
                    LOG.exception('reporting outages')

    def drain(self, within: float) -> int:
        """Write everything now (a graceful stop); the points still not
        stored after *within* seconds (their records stay uncommitted)."""
        deadline = time.monotonic() + within
        while True:
            self._ship_due(force=True)
            with self._lock:
                left = deadline - time.monotonic()
                if not self._points or left <= 0:
                    return self._points
                self._lock.wait(min(0.05, left))

    def written(self, tenant: str, within: float) -> bool:
        """Write a tenant's buffered points now and wait until they are
        stored (before its series are counted from its database: see
        limits/series.py). False after *within* seconds, or at once when
        its server is down (its points are held)."""
        deadline = time.monotonic() + within
        while True:
            with self._lock:
                buf = self._buffers.get(tenant)
                if buf is None or (not buf.lines and not buf.busy):
                    return True
                left = deadline - time.monotonic()
                if buf.held or left <= 0:
                    return False  # held points keep their server's backoff
                ship = not buf.busy
                if not ship:
                    self._lock.wait(min(0.05, left))
            if ship:
                self._ship(tenant)

    # -- reading -----------------------------------------------------------

    def buffered(self) -> int:
        return self._points

    def held(self) -> int:
        """Points of tenants whose server did not take the last write."""
        with self._lock:
            return sum(len(self._buffers[t].lines) + self._buffers[t].inflight
                       for t in self._held_tenants if t in self._buffers)

    def held_by_server(self) -> dict[str, tuple[int, float]]:
        """Server URL -> (points held in memory, time.time() the oldest
        of them was first held)."""
        out: dict[str, tuple[int, float]] = {}
        with self._lock:
            held = [(t, self._buffers[t]) for t in self._held_tenants
                    if t in self._buffers]
        for key, buf in held:
            url = self._placement(key).server.url
            points, since = out.get(url, (0, buf.held_since))
            out[url] = (points + len(buf.lines) + buf.inflight,
                        min(since, buf.held_since or since))
        return out

    def waiting_for(self, server) -> bool:
        """Whether points for *server* wait here or in the spill."""
        if self.spill is not None and self.spill.pending(server):
            return True
        return server.url in self.held_by_server()

    def holding(self) -> bool:
        return bool(self._held_tenants)

    def oldest_age(self) -> float:
        with self._lock:
            oldest = min((b.since for b in self._buffers.values()
                          if b.lines), default=None)
        return round(time.monotonic() - oldest, 3) if oldest else 0.0

    def close(self) -> None:
        """The timer stops at its next tick. The host never calls this
        (its workers end with the process); what builds drivers in
        process, tests and benchmarks, does, so no timer of theirs writes
        to, or logs about, servers already gone."""
        self._closed = True
        if self.poster is not None:
            self.poster.close()
