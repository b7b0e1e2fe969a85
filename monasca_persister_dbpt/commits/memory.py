"""What buffered points cost in memory, and the bound a budget allows.

``[dbpt] buffered_points_max`` bounds points, but a point's line is what
takes the memory, and lines differ a hundredfold: about 165 characters
for a usual metric, up to InfluxDB's 64 KiB series key for a hostile or
generated one. 200,000 of those would be 13 GB. So the buffers also
keep under ``[dbpt] buffered_memory_mb``: the bound in points is what
the budget holds at the mean size of a point, measured on a sample of
the lines as they are buffered (a few a batch, never all: the host's
thread pays for it), and the lower of the two bounds applies.

The mean follows what comes in within a few hundred sampled lines (three
batches of the batched consumer, a thousand records of the host's own
loop), so lines that grow lower the bound while the buffers fill. It is
an estimate, not an account: while the mean follows, the buffers can
pass the budget by what those records bring. Nothing is kept per
tenant.
"""

from __future__ import annotations

import sys

#: A point's bytes before anything is measured: the object of a
#: 165-character line and its slot in a buffer.
FIRST_GUESS = 224
#: Sampled lines over which the mean moves most of the way to a new size.
WINDOW = 128
#: Groups sampled in one batch of groups (evenly spread over it).
PER_BATCH = 64
#: Points buffered between two samples (a sample is taken at the first
#: call past them, of up to PER_BATCH of its groups).
SAMPLE_POINTS = 8
#: A buffer's list slot for a point, for each copy (replica) of it.
SLOT = 8


class PointMemory:
    """The running mean size of a buffered point, and the points bound."""

    def __init__(self, points_max: int, budget_bytes: int,
                 copies: int = 1) -> None:
        self.points_max = max(1, points_max)
        self.budget_bytes = max(1, budget_bytes)
        self.copies = max(1, copies)
        #: Mean bytes of a point's line object, as sampled.
        self.mean = float(FIRST_GUESS - SLOT)
        #: Points (each copy counted, as the buffers count them) allowed.
        self.bound = self._bound()

    def observe(self, groups) -> int:
        """Sample *groups* (``(tenant, lines)`` pairs, as buffered); the
        bound, in points counted per copy."""
        count = len(groups)
        step = max(1, count // PER_BATCH)
        mean = self.mean
        getsizeof = sys.getsizeof
        for index in range(0, count, step):
            lines = groups[index][1]
            if lines:
                mean += (getsizeof(lines[0]) - mean) / WINDOW
        self.mean = mean
        self.bound = self._bound()
        return self.bound

    def point_bytes(self) -> float:
        """Bytes one point takes in the buffers, all its copies."""
        return self.mean + SLOT * self.copies

    def _bound(self) -> int:
        held = int(self.budget_bytes // self.point_bytes())
        return max(1, min(self.points_max, held)) * self.copies
