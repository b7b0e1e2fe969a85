"""Per-tenant counters an operator can read without a debugger.

Each worker process counts what it wrote, dropped (by reason) and created,
logs a summary every ``[dbpt] stats_interval`` seconds and, when
``[dbpt] stats_file`` is set, writes the same counters as JSON.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
import time
from typing import Callable, Optional

LOG = logging.getLogger(__name__)


class Stats:
    def __init__(self, interval: float = 300.0,
                 path: Optional[str] = None) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, collections.Counter] = collections.defaultdict(
            collections.Counter)
        self._totals: collections.Counter = collections.Counter()
        self._gauges: dict[str, Callable[[], int]] = {}
        self._interval = interval
        self._path = path
        self._next = time.monotonic() + interval if interval else None

    def add(self, tenant: Optional[str], event: str, n: int = 1) -> None:
        if n <= 0:
            return
        with self._lock:
            self._counts[tenant if tenant is not None else '-'][event] += n
            self._totals[event] += n

    def gauge(self, name: str, read: Callable[[], int]) -> None:
        """Report ``read()`` as *name* in every summary (a level, not a sum)."""
        self._gauges[name] = read

    def snapshot(self) -> dict:
        gauges = {name: read() for name, read in self._gauges.items()}
        with self._lock:
            return {'pid': os.getpid(), 'time': time.time(),
                    'totals': dict(self._totals), 'gauges': gauges,
                    'tenants': {t: dict(c) for t, c in self._counts.items()}}

    def total(self, event: str) -> int:
        with self._lock:
            return self._totals[event]

    def maybe_report(self) -> None:
        """Log (and dump) the counters when the interval has passed."""
        if self._next is None or time.monotonic() < self._next:
            return
        self._next = time.monotonic() + self._interval
        self.report()

    def report(self) -> None:
        snap = self.snapshot()
        busiest = sorted(snap['tenants'].items(),
                         key=lambda kv: -sum(kv[1].values()))[:10]
        LOG.info('dbpt totals %s; now %s; top tenants %s',
                 json.dumps(snap['totals'], sort_keys=True),
                 json.dumps(snap['gauges'], sort_keys=True),
                 json.dumps(dict(busiest), sort_keys=True))
        if self._path:
            path = '%s.%d' % (self._path, snap['pid'])
            tmp = path + '.tmp'
            try:
                with open(tmp, 'w') as handle:
                    json.dump(snap, handle, sort_keys=True)
                os.replace(tmp, path)
            except OSError as exc:
                LOG.warning('cannot write stats file %s: %s', path, exc)
