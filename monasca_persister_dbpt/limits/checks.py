"""The limits a metric point passes before it is buffered, in order.

Cheap checks first, and those that spend a tenant's allowance (its rate
tokens, its series slots) last, so a point refused for its shape costs the
tenant nothing. Shape and series are checked once per series (the metrics
driver caches admitted series); time, value_meta and rate per point.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable, Optional

from monasca_persister_dbpt.limits.rate import RateLimiter
from monasca_persister_dbpt.limits.rules import LimitExceeded, Limits
from monasca_persister_dbpt.limits.rules import LimitsTable
from monasca_persister_dbpt.limits.series import SeriesCaps
from monasca_persister_dbpt.placement import Placement, PlacementMap

#: Series read from a tenant database to count it (InfluxDB's own default
#: max-series-per-database).
SEED_MAX = 1000000

_HOUR_MS = 3600 * 1000


class TenantLimits:
    def __init__(self, table: LimitsTable, *, share: float = 1.0,
                 seed: Optional[Callable[[str], Iterable[str]]] = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.table = table
        self.rate = RateLimiter(share)
        self.series = SeriesCaps(seed, share=share)
        self._clock = clock

    @classmethod
    def from_conf(cls, group, placements: PlacementMap, writer=None,
                  workers: int = 1) -> 'TenantLimits':
        """Defaults from ``[dbpt]``, overrides from the placement's tenant
        overrides file; *writer* counts the series already stored."""
        seed = None
        if writer is not None:
            def seed(tenant_id: str) -> list:
                return writer.series_keys(placements.place(tenant_id),
                                          SEED_MAX)
        return cls(LimitsTable.from_group(group,
                                          placements.tenant_overrides),
                   share=1.0 / max(1, workers), seed=seed)

    def __call__(self, tenant_id: str) -> Limits:
        return self.table(tenant_id)

    @staticmethod
    def check_blocked(limits: Limits, tenant_id: str) -> None:
        if limits.blocked:
            raise LimitExceeded('blocked', 'tenant %s is blocked in the '
                                'tenant overrides file' % tenant_id)

    @staticmethod
    def check_shape(limits: Limits, name: str, dimensions: dict) -> None:
        """A series' name and dimensions (before the tenant's own tags)."""
        most = limits.max_name_length
        if most and len(name) > most:
            raise LimitExceeded('name_length', 'metric name %r... has %d '
                                'characters, over max_name_length %d'
                                % (name[:40], len(name), most))
        most = limits.max_dimensions
        if most and len(dimensions) > most:
            raise LimitExceeded('dimensions', 'metric %r has %d dimensions, '
                                'over max_dimensions %d'
                                % (name[:80], len(dimensions), most))
        most = limits.max_dimension_length
        if most:
            for key, value in dimensions.items():
                if len(key) > most or len(value) > most:
                    raise LimitExceeded(
                        'dimension_length', 'metric %r: dimension %r... '
                        'is over max_dimension_length %d'
                        % (name[:80], key[:40], most))

    def check_time(self, limits: Limits, placement: Placement,
                   timestamp_ms: int) -> None:
        now = self._clock()
        policy = placement.retention
        if policy is not None and policy.hours is not None:
            oldest = now * 1000 - policy.hours * _HOUR_MS
            if timestamp_ms < oldest:
                raise LimitExceeded(
                    'too_old', 'timestamp %d ms is older than the retention '
                    'policy %s (%s) of %s' % (timestamp_ms, policy.name,
                                              policy.duration,
                                              placement.database))
        ahead = limits.max_future_seconds
        if ahead and timestamp_ms > (now + ahead) * 1000:
            raise LimitExceeded(
                'future', 'timestamp %d ms is more than max_future_seconds '
                '%d ahead' % (timestamp_ms, ahead))

    @staticmethod
    def check_value_meta(limits: Limits, dumped: str) -> None:
        """value_meta as the host dumps it (JSON, UTF-8)."""
        most = limits.max_value_meta_bytes
        if not most or len(dumped) * 4 <= most:  # cannot be over
            return
        size = len(dumped.encode('utf-8', 'surrogatepass'))
        if size > most:
            raise LimitExceeded('value_meta_size', 'value_meta has %d bytes '
                                'of JSON, over max_value_meta_bytes %d'
                                % (size, most))

    def take(self, tenant_id: str, limits: Limits) -> None:
        """Spend one point of the tenant's rate (callers skip the call
        when the tenant has none)."""
        if not self.rate.take(tenant_id, limits.ingestion_rate,
                              limits.burst):
            raise LimitExceeded('rate', 'over ingestion_rate %g points/s '
                                '(burst %d)' % (limits.ingestion_rate,
                                                limits.burst))

    def admit_series(self, tenant_id: str, key: str, limits: Limits) -> None:
        """A series not seen since the driver's cache last held it."""
        cap = limits.max_series
        if cap and not self.series.admit(tenant_id, key, cap):
            raise LimitExceeded('series', 'new series %s... would pass '
                                'max_series %d' % (key[:120], cap))
