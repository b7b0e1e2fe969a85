"""Per-tenant counters an operator can read without a debugger.

Each worker process counts what it wrote, dropped (by reason) and created,
logs a summary every ``[dbpt] stats_interval`` seconds (from a timer, so a
worker whose topic is quiet reports too) and, when ``[dbpt] stats_file`` is
set, writes the same counters as JSON.

State stays bounded whatever the number of tenants ever seen: totals hold
everything, per-tenant counters are kept for the ``TENANTS_MAX`` most
recently active tenants, and the report names only the busiest ``TOP``.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
import time
from typing import Callable, Hashable, Optional

LOG = logging.getLogger(__name__)

#: Tenants whose own counters are kept (least recently active forgotten).
TENANTS_MAX = 10000
#: Tenants named in a summary line and in the stats file.
TOP = 100
#: Counter key for records whose tenant could not be read or is invalid.
UNKNOWN_TENANT = '-'


class Stats:
    def __init__(self, interval: float = 300.0,
                 path: Optional[str] = None,
                 tenants_max: int = TENANTS_MAX) -> None:
        self._lock = threading.Lock()
        self._counts: collections.OrderedDict = collections.OrderedDict()
        self._tenants_max = tenants_max
        self._totals: collections.Counter = collections.Counter()
        self._gauges: dict[str, Callable[[], int]] = {}
        self._labelled: dict[str, tuple] = {}
        self._interval = interval
        self._path = path
        self._timer: Optional[threading.Thread] = None
        self._pid = None
        if interval:
            self._start_timer()

    def _start_timer(self) -> None:
        # One timer per process: the host forks workers after loading us.
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._timer = threading.Thread(target=self._tick, daemon=True,
                                       name='dbpt-stats')
        self._timer.start()

    def _tick(self) -> None:
        while True:
            time.sleep(self._interval)
            try:
                self.report()
            except Exception:  # noqa: BLE001 - a report must not end us
                LOG.exception('dbpt stats report failed')

    def add(self, tenant: Optional[str], event: str, n: int = 1) -> None:
        if n <= 0:
            return
        key = tenant if tenant is not None else UNKNOWN_TENANT
        with self._lock:
            counter = self._counts.get(key)
            if counter is None:
                counter = self._counts[key] = collections.Counter()
                if len(self._counts) > self._tenants_max:
                    self._counts.popitem(last=False)
            else:
                self._counts.move_to_end(key)
            counter[event] += n
            self._totals[event] += n

    def gauge(self, name: str, read: Callable[[], int]) -> None:
        """Report ``read()`` as *name* in every summary (a level, not a sum)."""
        self._gauges[name] = read

    def labelled(self, name: str, label: str,
                 read: Callable[[], dict]) -> None:
        """A level per *label* value: ``read()`` gives {value: level}
        (per server, say)."""
        self._labelled[name] = (label, read)

    def labelled_gauges(self) -> dict:
        """name -> (label, {value: level})."""
        return {name: (label, read())
                for name, (label, read) in self._labelled.items()}

    def tenant(self, tenant: str) -> dict:
        """One tenant's counters (empty once it has been forgotten)."""
        with self._lock:
            return dict(self._counts.get(tenant, {}))

    def per_tenant(self) -> dict:
        """Every tracked tenant's counters (at most tenants_max)."""
        with self._lock:
            return {t: dict(c) for t, c in self._counts.items()}

    def gauges(self) -> dict:
        out = {name: read() for name, read in self._gauges.items()}
        for name, (_, values) in self.labelled_gauges().items():
            if values:
                out[name] = values
        return out

    def snapshot(self, top: int = TOP) -> dict:
        gauges = self.gauges()
        with self._lock:
            gauges['tenants_tracked'] = len(self._counts)
            busiest = sorted(self._counts.items(),
                             key=lambda kv: -sum(kv[1].values()))[:top]
            return {'pid': os.getpid(), 'time': time.time(),
                    'totals': dict(self._totals), 'gauges': gauges,
                    'tenants': {t: dict(c) for t, c in busiest}}

    def total(self, event: str) -> int:
        with self._lock:
            return self._totals[event]

    def maybe_report(self) -> None:
        """Start the timer in this process if it is not running (after a
        fork); the timer itself reports every interval."""
        if self._interval:
            self._start_timer()

    def report(self) -> None:
        snap = self.snapshot()
        busiest = dict(list(snap['tenants'].items())[:10])
        LOG.info('dbpt totals %s; now %s; top tenants %s',
                 json.dumps(snap['totals'], sort_keys=True),
                 json.dumps(snap['gauges'], sort_keys=True),
                 json.dumps(busiest, sort_keys=True))
        if self._path:
            path = '%s.%d' % (self._path, snap['pid'])
            tmp = path + '.tmp'
            try:
                with open(tmp, 'w') as handle:
                    json.dump(snap, handle, sort_keys=True)
                os.replace(tmp, path)
            except OSError as exc:
                LOG.warning('cannot write stats file %s: %s', path, exc)


class LogThrottle:
    """At most one log line per key every *interval* seconds; how many were
    held back is said in the next one. Bounded in keys."""

    def __init__(self, interval: float = 60.0, max_keys: int = 10000,
                 logger: Optional[logging.Logger] = None) -> None:
        self._interval = interval
        self._max = max_keys
        self._log = logger or LOG
        self._seen: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()

    def log(self, key: Hashable, level: int, msg: str, *args) -> bool:
        """Log unless *key* logged within the interval; True if logged."""
        now = time.monotonic()
        with self._lock:
            entry = self._seen.get(key)
            if entry is not None and now < entry[0]:
                entry[1] += 1
                return False
            held = entry[1] if entry is not None else 0
            self._seen[key] = [now + self._interval, 0]
            self._seen.move_to_end(key)
            while len(self._seen) > self._max:
                self._seen.popitem(last=False)
        if held:
            msg += ' (%d similar line(s) in the last %.0fs not logged)'
            args = args + (held, self._interval)
        self._log.log(level, msg, *args)
        return True
