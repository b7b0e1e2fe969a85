"""Ingestion rate: a token bucket per tenant.

Each worker process holds its share of the persister's rate (the rate and
the burst over the number of workers reading the topic), which is exact
when a tenant's records spread over the partitions evenly, as Kafka's
default partitioner spreads keyless records. Buckets are kept for the
``TENANTS_MAX`` most recently active tenants; one forgotten comes back with
a full bucket, which only a burst of that many other tenants can cause.
"""

from __future__ import annotations

import collections
import time

#: Tenants whose bucket is kept.
TENANTS_MAX = 100000


class RateLimiter:
    def __init__(self, share: float = 1.0,
                 tenants_max: int = TENANTS_MAX) -> None:
        #: Fraction of each tenant's rate and burst this worker allows.
        self.share = share
        self._buckets: collections.OrderedDict = collections.OrderedDict()
        self._max = tenants_max

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, tenant_id: str, rate: float, burst: float,
             now: float = None) -> bool:
        """True if *tenant_id* may send one more point now."""
        now = time.monotonic() if now is None else now
        rate, burst = rate * self.share, max(burst * self.share, 1.0)
        bucket = self._buckets.get(tenant_id)
        if bucket is None:
            bucket = self._buckets[tenant_id] = [burst, now]
            if len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(tenant_id)
            bucket[0] = min(burst, bucket[0] + (now - bucket[1]) * rate)
            bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return True
        return False
