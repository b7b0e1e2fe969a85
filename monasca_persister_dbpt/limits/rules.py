"""Which limits apply to a tenant, and the reasons a point is refused.

The defaults are the ``[dbpt]`` options; a tenant's line in the tenant
overrides file (:mod:`monasca_persister_dbpt.placement.overrides`) replaces
any of them, under the same names. A limit of 0 is no limit.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

from monasca_persister_dbpt.placement.overrides import TenantOverrides

#: reason -> what it means; each is counted per tenant as refused_<reason>.
REASONS: Mapping[str, str] = {
    'rate': 'the tenant sent more than ingestion_rate and its burst',
    'series': 'a new series beyond the tenant\'s max_series',
    'dimensions': 'more dimensions than max_dimensions',
    'name_length': 'a metric name longer than max_name_length',
    'dimension_length': 'a dimension name or value longer than '
                        'max_dimension_length',
    'value_meta_size': 'value_meta larger than max_value_meta_bytes',
    'future': 'a timestamp more than max_future_seconds ahead',
    'too_old': 'a timestamp older than the tenant\'s retention policy',
    'blocked': 'the tenant is blocked in the overrides file (a deleted '
               'project whose data was dropped)',
}

#: Tenants whose resolved limits are cached (emptied when full).
CACHE_MAX = 20000


class LimitExceeded(Exception):
    """A point refused by a limit: the decision, not a failure."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__('%s: %s' % (reason, detail))
        self.reason = reason
        self.detail = detail


@dataclasses.dataclass(frozen=True)
class Limits:
    ingestion_rate: float = 0.0
    ingestion_burst: int = 0
    max_series: int = 0
    max_dimensions: int = 0
    max_name_length: int = 255
    max_dimension_length: int = 255
    max_value_meta_bytes: int = 2048
    max_future_seconds: int = 0
    #: Per tenant only (the overrides file): refuse every point.
    blocked: bool = False
    #: The token bucket's size: ten seconds of rate unless set.
    burst: float = dataclasses.field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, 'burst', float(
            self.ingestion_burst or self.ingestion_rate * 10))

    @property
    def shape_limited(self) -> bool:
        return bool(self.max_dimensions or self.max_name_length or
                    self.max_dimension_length)


NAMES = tuple(f.name for f in dataclasses.fields(Limits) if f.init)
#: The limits with a ``[dbpt]`` default (``blocked`` is per tenant only).
DEFAULTED = tuple(name for name in NAMES if name != 'blocked')


class LimitsTable:
    """Tenant id -> its Limits: the defaults with its overrides on top."""

    def __init__(self, defaults: Limits,
                 overrides: TenantOverrides) -> None:
        self.defaults = defaults
        self._overrides = overrides
        self._cache: dict[str, Limits] = {}
        overrides.listeners.append(self._cache.clear)

    @classmethod
    def from_group(cls, group, overrides: TenantOverrides) -> 'LimitsTable':
        return cls(Limits(**{name: getattr(group, name)
                            for name in DEFAULTED}),
                   overrides)

    def __call__(self, tenant_id: str) -> Limits:
        limits = self._cache.get(tenant_id)
        if limits is None:
            own = self._overrides.settings_of(tenant_id)
            limits = dataclasses.replace(
                self.defaults, **{k: v for k, v in own.items()
                                  if k in NAMES}) if own else self.defaults
            if len(self._cache) >= CACHE_MAX:
                self._cache.clear()
            self._cache[tenant_id] = limits
        return limits
