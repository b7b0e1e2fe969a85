"""Ingestion rate: a token bucket per tenant.

Each worker process holds its share of the persister's rate (the rate and
the burst over the number of workers reading the topic), which is exact
when a tenant's records spread over the partitions evenly, as Kafka's
default partitioner spreads keyless records. Buckets are kept for
``TENANTS_MAX`` tenants (the oldest dropped first); one forgotten comes back
with a full bucket, which only that many other tenants can cause.
"""

from __future__ import annotations

import time
from typing import Optional

#: Tenants whose bucket is kept.
TENANTS_MAX = 100000


class RateLimiter:
    def __init__(self, share: float = 1.0,
                 tenants_max: int = TENANTS_MAX) -> None:
        #: Fraction of each tenant's rate and burst this worker allows.
        self.share = share
        self._buckets: dict[str, list] = {}
        self._max = tenants_max

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, tenant_id: str, rate: float, burst: float,
             now: Optional[float] = None) -> bool:
        """True if *tenant_id* may send one more point now."""
        if now is None:
            now = time.monotonic()
        share = self.share
        cap = burst * share
        if cap < 1.0:  # a worker's share still lets one point through
            cap = 1.0
        bucket = self._buckets.get(tenant_id)
        if bucket is None:
            if len(self._buckets) >= self._max:
                # The oldest bucket goes (dicts keep insertion order).
                del self._buckets[next(iter(self._buckets))]
            bucket = self._buckets[tenant_id] = [cap, now]
        else:
            tokens = bucket[0] + (now - bucket[1]) * rate * share
            bucket[0] = tokens if tokens < cap else cap
            bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return True
        return False
