"""Series per tenant database: which series a tenant has, within a budget.

A tenant's known series are kept in a scalable Bloom filter (a chain of
filters, each twice the size of the one before and a little tighter), 2 to
5 bytes a series instead of the ~80 of an exact set of keys: a tenant with
1,000 series costs a few KiB, one with 100,000 about 400 KiB. A Bloom
filter never forgets a series it holds, so an existing series is never
refused; it may take a new series for a known one (at most
``FALSE_POSITIVE`` over the whole chain, 1%), which lets a tenant past its
cap by that share of its new series, never more.

When a worker first sees a tenant its filter is filled from the database
itself (``SHOW SERIES``, in background threads), so a restart does not reset
the count: the tenant's first new series waits for it, up to ``SEED_WAIT``
seconds (then, and while a failed fill waits ``SEED_RETRY`` to be tried
again, new series are admitted and counted). Only tenants with a cap pay
this, once per worker process. Filters past ``BUDGET_BYTES`` in all are dropped,
least recently used first, and filled again from the database when their
tenant comes back.

The cap is the database's, not the worker's: other workers and other
persister processes add series this one never sees. So a worker admits a
tenant's new series only out of an *allowance*: after each count of the
database it may admit half of its share of what is left under the cap
(its partitions over the topic's: :attr:`SeriesCaps.share_of`), then it
counts again (about log2(cap) counts on the way to the cap, the last ones
one series apart). The points of a capped tenant that is adding series
are written at once, not coalesced (:attr:`SeriesCaps.near`), and before
each count the worker's own are waited for (:attr:`SeriesCaps.before_count`),
so every count holds the other workers' series but their last admitted:
the database passes the cap by at most one series per other worker, plus
the filters' false positives.
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import logging
import math
import os
import queue
import threading
import time
from typing import Callable, Iterable, Optional

from monasca_persister_dbpt.stats import LogThrottle

LOG = logging.getLogger(__name__)

FALSE_POSITIVE = 0.01
_TIGHTEN = 0.9
#: Series the first filter of a tenant holds before the next is added.
FIRST_CAPACITY = 256
#: Bytes all filters of a worker may take; past it, least recent first go.
BUDGET_BYTES = 256 * 1024 * 1024
#: Seconds before a failed fill from the database is tried again.
SEED_RETRY = 30.0
#: Seconds a tenant's first new series waits for its count.
SEED_WAIT = 5.0
#: Threads counting series, per worker process.
SEED_THREADS = 4
#: Seconds the host's thread waits for a count of the database.
RECOUNT_WAIT = 1.0
#: Tenants remembered as adding series under a cap (a bounded set),
#: forgotten every so often: one that stopped is coalesced again.
NEAR_MAX = 10000
NEAR_FOR = 60.0


class _Bloom:
    __slots__ = ('bits', 'size', 'hashes', 'capacity', 'count')

    def __init__(self, capacity: int, error: float) -> None:
        self.size = max(64, int(-capacity * math.log(error)
                                / math.log(2) ** 2))
        self.hashes = max(1, round(self.size / capacity * math.log(2)))
        self.bits = bytearray((self.size + 7) // 8)
        self.capacity = capacity
        self.count = 0

    def has(self, h1: int, h2: int) -> bool:
        bits, size = self.bits, self.size
        for i in range(self.hashes):  # most misses end at the first bit
            p = (h1 + i * h2) % size
            if not bits[p >> 3] & (1 << (p & 7)):
                return False
        return True

    def add(self, h1: int, h2: int) -> None:
        bits, size = self.bits, self.size
        for i in range(self.hashes):
            p = (h1 + i * h2) % size
            bits[p >> 3] |= 1 << (p & 7)
        self.count += 1


class SeriesFilter:
    """A set of series keys that only grows: never a false "no"."""

    __slots__ = ('_blooms', 'count')

    def __init__(self) -> None:
        self._blooms: list[_Bloom] = []
        #: Series added (an estimate by at most the false positives).
        self.count = 0

    @staticmethod
    def _hash(key: str) -> tuple[int, int]:
        digest = hashlib.blake2b(key.encode('utf-8', 'surrogatepass'),
                                 digest_size=16).digest()
        return (int.from_bytes(digest[:8], 'little'),
                int.from_bytes(digest[8:], 'little') | 1)

    def __contains__(self, key: str) -> bool:
        h1, h2 = self._hash(key)
        return any(b.has(h1, h2) for b in self._blooms)

    def add(self, key: str) -> bool:
        """Add *key*; False if it (probably) was there already."""
        h1, h2 = self._hash(key)
        blooms = self._blooms
        if any(b.has(h1, h2) for b in blooms):
            return False
        if not blooms or blooms[-1].count >= blooms[-1].capacity:
            # Each new filter tighter (a geometric series summing to
            # FALSE_POSITIVE), so the chain's error stays bounded.
            n = len(blooms)
            blooms.append(_Bloom(FIRST_CAPACITY * 2 ** n,
                                 FALSE_POSITIVE * (1 - _TIGHTEN)
                                 * _TIGHTEN ** n))
        blooms[-1].add(h1, h2)
        self.count += 1
        return True

    @property
    def nbytes(self) -> int:
        return sum(len(b.bits) for b in self._blooms) + 64


class _Tenant:
    __slots__ = ('series', 'seeded', 'retry_at', 'ready', 'allow',
                 'counting')

    def __init__(self) -> None:
        self.series = SeriesFilter()
        self.seeded = False
        self.retry_at = 0.0
        #: New series this worker may admit before it counts the database
        #: again (near the cap).
        self.allow = 0
        #: The count of the database under way (a future), if any.
        self.counting = None
        #: Set once the count from the database is in (or could not be).
        self.ready = threading.Event()


class SeriesCaps:
    """Admit a tenant's new series up to its cap; existing ones always.

    *seed* (tenant id -> the canonical keys its database holds) is called
    from a background thread; it may raise, and is tried again later.
    """

    def __init__(self, seed: Optional[Callable[[str], Iterable[str]]] = None,
                 budget_bytes: int = BUDGET_BYTES, share: float = 1.0) -> None:
        self._seed = seed
        #: This worker's share of an allowance (1 / the process's workers).
        self._share = share
        self._budget = budget_bytes
        self._tenants: collections.OrderedDict = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        self._pid = None
        self._log = LogThrottle(logger=LOG)
        #: Tenants dropped to stay in the budget, and seeds that failed.
        self.evicted = 0
        self.seed_failures = 0
        #: Tenants in the last share of their cap: their points are
        #: written at once (see the module doc).
        self.near: set = set()
        self._near_until = time.monotonic() + NEAR_FOR
        self._recounter = None
        #: Called (tenant id) in the counting thread before each count:
        #: writes what this worker admitted, so that the count holds it.
        self.before_count: Optional[Callable[[str], object]] = None
        #: Called in the counting thread: this worker's share of the
        #: topic's records (its partitions over all), None if not known.
        self.share_of: Optional[Callable[[], Optional[float]]] = None

    def admit(self, tenant_id: str, key: str, cap: int) -> bool:
        """True if *key* may be written: known, or new within *cap*."""
        with self._lock:
            state = self._state(tenant_id)
            if key in state.series:
                return True
            ready = None if state.seeded else state.ready
        if ready is not None:
            # A new series of a tenant not counted yet: wait for the count
            # (a restart must not reset the cap), but not for ever.
            ready.wait(SEED_WAIT)
        with self._lock:
            state, verdict = self._decided(tenant_id, key, cap)
        if verdict is not None:
            return verdict
        if self._seed is not None and state.allow <= 0:
            self._recount(tenant_id, cap)
        with self._lock:
            state, verdict = self._decided(tenant_id, key, cap)
            if verdict is not None:
                return verdict
            series = state.series
            state.allow -= 1
            if len(self.near) >= NEAR_MAX or \
                    time.monotonic() > self._near_until:
                self.near.clear()
                self._near_until = time.monotonic() + NEAR_FOR
            self.near.add(tenant_id)
            before = series.nbytes
            series.add(key)
            self._grew(series.nbytes - before)
            return True

    def _allowance(self, cap: int, count: int) -> int:
        return max(1, int((cap - count) * self._share / 2))

    def _decided(self, tenant_id: str, key: str, cap: int):
        """With the lock held: the tenant's state, and True (known), False
        (at the cap) or None (a new series that may be admitted)."""
        state = self._state(tenant_id)
        if key in state.series:
            return state, True
        if state.series.count >= cap:
            return state, False
        return state, None

    def _recount(self, tenant_id: str, cap: int) -> None:
        """Add what the database holds now (other workers' series) to the
        tenant's count, and allow half of this worker's share of what is
        left under the cap before the next count (so the counts come
        closer together as the cap nears: about log2(cap) of them). The
        host's thread waits at most ``RECOUNT_WAIT`` seconds: until the
        count is in, one new series at a time is admitted, each waiting for
        it again; a count that fails is tried again ``SEED_RETRY`` seconds
        later, and meanwhile the count is this worker's."""
        with self._lock:
            state = self._state(tenant_id)
            if time.monotonic() < state.retry_at:
                state.allow = self._allowance(cap, state.series.count)
                return
            future = state.counting
            if future is None:
                future = state.counting = self._pool().submit(
                    self._count_again, tenant_id)
        try:
            future.result(RECOUNT_WAIT)
            counted = True
        except concurrent.futures.TimeoutError:
            counted = False  # added when it comes
        with self._lock:
            state = self._tenants.get(tenant_id)
            if state is not None:
                state.allow = self._allowance(cap, state.series.count) \
                    if counted else 1

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._recounter is None or self._recounter[0] != os.getpid():
            self._recounter = (os.getpid(), concurrent.futures
                               .ThreadPoolExecutor(2, thread_name_prefix=
                                                   'dbpt-series-count'))
        return self._recounter[1]

    def _count_again(self, tenant_id: str) -> None:
        try:
            self._count_database(tenant_id)
        finally:
            with self._lock:
                state = self._tenants.get(tenant_id)
                if state is not None:
                    state.counting = None

    def _count_database(self, tenant_id: str) -> None:
        if self.share_of is not None:
            share = self.share_of()
            if share is not None:
                self._share = share
        if self.before_count is not None:
            self.before_count(tenant_id)
        try:
            keys = list(self._seed(tenant_id))
        except Exception as exc:  # noqa: BLE001 - counted locally meanwhile
            self._log.log('seed', logging.WARNING,
                          'cannot count the series of tenant %s again (%s); '
                          'its cap is counted by this worker for %ds',
                          tenant_id, str(exc)[:300], SEED_RETRY)
            with self._lock:
                state = self._tenants.get(tenant_id)
                if state is not None:
                    state.retry_at = time.monotonic() + SEED_RETRY
            return
        self._add_keys(tenant_id, keys)

    def _add_keys(self, tenant_id: str, keys: list) -> None:
        """Add what a count of the database found, in slices, so that the
        write path never waits long (nothing if the tenant was dropped
        meanwhile: it is counted again when it comes back)."""
        for start in range(0, len(keys), 2000):
            with self._lock:
                state = self._tenants.get(tenant_id)
                if state is None:
                    return
                before = state.series.nbytes
                for key in keys[start:start + 2000]:
                    state.series.add(key)
                self._grew(state.series.nbytes - before)

    def _state(self, tenant_id: str) -> _Tenant:
        state = self._tenants.get(tenant_id)
        if state is None:
            state = self._tenants[tenant_id] = _Tenant()
            self._ask_seed(tenant_id, state)
        else:
            self._tenants.move_to_end(tenant_id)
            if not state.seeded and state.retry_at and \
                    time.monotonic() >= state.retry_at:
                self._ask_seed(tenant_id, state)
        return state

    def count(self, tenant_id: str) -> Optional[int]:
        state = self._tenants.get(tenant_id)
        return state.series.count if state is not None else None

    def seeded(self, tenant_id: str) -> bool:
        state = self._tenants.get(tenant_id)
        return bool(state and state.seeded)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._tenants)

    def _grew(self, delta: int) -> None:
        self._bytes += delta
        while self._bytes > self._budget and len(self._tenants) > 1:
            _, old = self._tenants.popitem(last=False)
            self._bytes -= old.series.nbytes
            self.evicted += 1

    def _ask_seed(self, tenant_id: str, state: _Tenant) -> None:
        if self._seed is None:
            state.seeded = True
            state.ready.set()
            return
        state.retry_at = 0.0
        state.ready.clear()
        if self._pid != os.getpid():  # threads per (forked) process
            self._pid = os.getpid()
            for n in range(SEED_THREADS):
                threading.Thread(target=self._seeding, daemon=True,
                                 name='dbpt-series-seed-%d' % n).start()
        self._queue.put(tenant_id)

    def _seeding(self) -> None:
        while True:
            tenant_id = self._queue.get()
            try:
                keys = list(self._seed(tenant_id))
            except Exception as exc:  # noqa: BLE001 - retried later
                self.seed_failures += 1
                # One line a minute, not one per tenant, when a server is
                # down for thousands of them.
                self._log.log('seed', logging.WARNING,
                              'cannot count the series of tenant %s yet '
                              '(%s); its new series are admitted meanwhile '
                              'and the count tried again in %ds', tenant_id,
                              str(exc)[:300], SEED_RETRY)
                with self._lock:
                    state = self._tenants.get(tenant_id)
                    if state is not None:
                        state.retry_at = time.monotonic() + SEED_RETRY
                        state.ready.set()  # admit meanwhile, not wait
                continue
            self._add_keys(tenant_id, keys)
            with self._lock:
                state = self._tenants.get(tenant_id)
                if state is not None:
                    state.seeded = True
                    state.ready.set()

    def wait_seeded(self, timeout: float = 10.0) -> bool:
        """For tests and benchmarks: wait until no fill is pending."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                pending = [t for t, s in self._tenants.items()
                           if not s.seeded and not s.retry_at]
            if not pending:
                return True
            time.sleep(0.01)
        return False
