"""The low watermark: per partition, the first record not yet written.

Every record the driver accepts is tracked with the ticket of the tenant
buffer its point went into; a ticket is done when InfluxDB has taken its
points (or refused them for good, which is a decision too). A refused
record only moves the partition's position. The offset committed for a
partition is that of its oldest record with a pending ticket, or the
position after the last record seen when none is pending: a worker killed
at any moment re-reads at most what was not written, and a new owner of
the partition after a rebalance starts there too.

The host's thread tracks and computes offsets, writer threads only set
``Ticket.done``, and the stats and exposition threads read the lag: reading
offsets pops written records off a partition's queue, so a lock keeps two
readers from popping one record each where one had seen only the first
done (the commit then passed a record not yet written).
"""

from __future__ import annotations

import collections
import threading
from typing import Iterable, Optional

#: (topic, partition)
Partition = tuple


class Ticket:
    """The points of one tenant buffer: done once all are written."""

    __slots__ = ('done', 'abandoned', 'joints')

    def __init__(self) -> None:
        self.done = False
        #: Given up for a stale range (a replica's points only).
        self.abandoned = False
        #: The JointTickets it is part of (replicas only).
        self.joints: Optional[list] = None


class JointTicket:
    """A point written to several replicas: done once every replica stored
    it or gave it up for a stale range, and at least one stored it (so a
    committed record is always held somewhere)."""

    __slots__ = ('parts', '_done')

    def __init__(self, parts: tuple) -> None:
        self.parts = parts
        self._done = False
        for part in parts:
            if part.joints is None:
                part.joints = []
            part.joints.append(self)

    @property
    def done(self) -> bool:
        if not self._done:
            parts = self.parts
            self._done = all(p.done or p.abandoned for p in parts) and \
                any(p.done for p in parts)
        return self._done


def may_abandon(ticket: Ticket) -> bool:
    """Whether every point of *ticket* keeps a replica that has not given
    it up (its records can still be committed once that one stores it)."""
    return all(any(p is not ticket and not p.abandoned for p in joint.parts)
               for joint in ticket.joints or ())


class Watermark:
    def __init__(self) -> None:
        self._pending: dict[Partition, collections.deque] = {}
        self._next: dict[Partition, int] = {}
        self._committed: dict[Partition, int] = {}
        self._lock = threading.Lock()

    def track(self, partition: Partition, offset: int, ticket: Ticket) -> None:
        with self._lock:
            pending = self._pending.get(partition)
            if pending is None:
                pending = self._pending[partition] = collections.deque()
            pending.append((offset, ticket))
            if offset >= self._next.get(partition, -1):
                self._next[partition] = offset + 1

    def track_many(self, entries: list) -> None:
        """:meth:`track` for each ``(partition, offset, ticket)`` of
        *entries*, which are in offset order within each partition."""
        pending_of = self._pending
        following = self._next
        last = None
        pending = None
        with self._lock:
            for partition, offset, ticket in entries:
                if partition != last:
                    last = partition
                    pending = pending_of.get(partition)
                    if pending is None:
                        pending = pending_of[partition] = \
                            collections.deque()
                pending.append((offset, ticket))
                if offset >= following.get(partition, -1):
                    following[partition] = offset + 1

    def skip(self, partition: Partition, offset: int) -> None:
        """A record with nothing to write (refused): only the position."""
        with self._lock:
            if offset >= self._next.get(partition, -1):
                self._next[partition] = offset + 1

    def offsets(self) -> dict[Partition, int]:
        """What may be committed now, per partition."""
        out = {}
        with self._lock:
            for partition, position in self._next.items():
                pending = self._pending.get(partition)
                while pending and pending[0][1].done:
                    pending.popleft()
                out[partition] = pending[0][0] if pending else position
        return out

    def owed(self) -> bool:
        """True when a commit would move some partition forward."""
        return any(self._committed.get(p) != o
                   for p, o in self.offsets().items())

    def committed(self, offsets: dict[Partition, int]) -> None:
        self._committed.update(offsets)

    def reset(self, partitions: Iterable[Partition]) -> None:
        """Forget partitions assigned anew (after a rebalance the group's
        committed offset is where reading starts; stale points of ours are
        still written, they just no longer hold anything back)."""
        with self._lock:
            for partition in partitions:
                self._pending.pop(partition, None)
                self._next.pop(partition, None)
                self._committed.pop(partition, None)

    def lag(self) -> int:
        """Records seen but not committable yet, over all partitions."""
        offsets = self.offsets()
        following = dict(self._next)
        return sum(max(following[p] - o, 0) for p, o in offsets.items()
                   if p in following)
