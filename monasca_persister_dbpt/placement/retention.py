"""Retention: each tenant's default policy, its tiers and their shard groups.

Upstream's names are kept (``<N>h`` for ``default_retention_hours``, ``2w``
for a ``project:2w`` override), so databases made by either tool look
alike. Per tenant, "no retention" is still a policy to reconcile to
(InfluxDB's own ``autogen``, infinite), so that removing an override brings a
shortened policy back.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Mapping, Optional

from monasca_persister_dbpt.placement.errors import InvalidDuration
from monasca_persister_dbpt.placement.errors import InvalidOption

_DURATION = re.compile(r'(\d+)([hdw]?)')
_UNIT_HOURS = {'h': 1, 'd': 24, 'w': 24 * 7}


@dataclasses.dataclass(frozen=True)
class RetentionPolicy:
    """The default policy a tenant database must have.

    ``hours`` is None for an infinite policy. The name follows upstream
    (``<N>h`` for default_retention_hours, ``2w`` for a ``project:2w``
    override), so databases made by either tool look alike.
    """

    name: str
    hours: Optional[int]
    shard_duration: Optional[str] = None

    @property
    def duration(self) -> str:
        return 'INF' if self.hours is None else '%dh' % self.hours


@dataclasses.dataclass(frozen=True)
class Tier:
    """A downsampled copy of the raw data: means of ``value`` per interval,
    kept in a policy of its own (``tier_<interval>``) and filled by a
    continuous query (``dbpt_tier_<interval>``)."""

    interval: str
    policy: RetentionPolicy
    #: Seconds a point may arrive after its interval closed and still be
    #: in the tier (its query recomputes that many seconds back).
    lateness: int = 0

    @property
    def cq_name(self) -> str:
        return 'dbpt_' + self.policy.name

    @property
    def seconds(self) -> int:
        unit = {'s': 1, 'm': 60, 'h': 3600, 'd': 86400, 'w': 604800}
        return int(self.interval[:-1]) * unit[self.interval[-1]]


def parse_duration(text: str, bare_unit: str = 'h') -> RetentionPolicy:
    """Parse ``2w``, ``1d``, ``72h`` or ``inf``; a bare number is in *bare_unit*."""
    value = str(text).strip()
    if value.lower() == 'inf':
        return RetentionPolicy(name='inf', hours=None)
    match = _DURATION.fullmatch(value)
    if not match:
        raise InvalidDuration(
            'retention %r is not <N>h, <N>d, <N>w or inf' % (text,))
    number, unit = int(match.group(1)), match.group(2) or bare_unit
    if unit not in _UNIT_HOURS:
        raise InvalidDuration('retention %r: unknown unit %r' % (text, unit))
    hours = number * _UNIT_HOURS[unit]
    if hours < 1:
        raise InvalidDuration(
            'retention %r is shorter than InfluxDB\'s minimum of 1h' % (text,))
    return RetentionPolicy(name='%d%s' % (number, unit), hours=hours)


_INTERVAL = re.compile(r'(\d+)([smhdw])')


def parse_tiers(items) -> tuple:
    """``5m:4w,1h:260w:52w`` (or its list) -> tiers, shortest interval
    first. The optional third part is the tier's own shard group duration
    (a five-year tier in week-long groups would hold 261 shards)."""
    if isinstance(items, str):
        items = [p for p in (i.strip() for i in items.split(',')) if p]
    tiers = {}
    for item in items:
        parts = [p.strip() for p in str(item).strip().split(':')]
        match = _INTERVAL.fullmatch(parts[0])
        if len(parts) not in (2, 3) or not match or int(match.group(1)) < 1:
            raise InvalidDuration('retention tier %r is not <interval>:<dura'
                                  'tion>[:<shard duration>], e.g. 5m:4w or '
                                  '1h:260w:52w (interval units s, m, h, d, w)'
                                  % (item,))
        rp = parse_duration(parts[1])
        name = 'tier_' + parts[0]
        shard = None
        if len(parts) == 3:
            shard = _shard_duration(parts[2], 'retention tier %r' % (item,))
            if rp.hours is not None and \
                    parse_duration(shard).hours > rp.hours:
                raise InvalidDuration('retention tier %r: shard duration %s '
                                      'is longer than the tier keeps data'
                                      % (item, shard))
        tiers[name] = Tier(parts[0], dataclasses.replace(
            rp, name=name, shard_duration=shard))
    return tuple(sorted(tiers.values(), key=lambda t: t.seconds))


def parse_tenant_tiers(lines) -> dict:
    """``project=5m:8w,1h:inf`` lines (``project=`` for none) -> tiers."""
    result = {}
    for line in lines or ():
        tenant, sep, spec = str(line).partition('=')
        if not sep or not tenant.strip():
            raise InvalidDuration('tenant tiers %r is not project=<tiers>'
                                  % (line,))
        try:
            result[tenant.strip()] = parse_tiers(spec)
        except InvalidDuration as exc:
            raise InvalidDuration('project %s: %s' % (tenant.strip(), exc)) \
                from None
    return result


def parse_overrides(items: Mapping[str, str] | str,
                    bare_unit: str = 'h') -> dict[str, RetentionPolicy]:
    """Parse ``project:2w,project2:1d`` (or the dict oslo's DictOpt made of it)."""
    if isinstance(items, str):
        pairs = {}
        for part in filter(None, (p.strip() for p in items.split(','))):
            tenant, sep, value = part.partition(':')
            if not sep:
                raise InvalidDuration(
                    'retention override %r is not project:duration' % part)
            pairs[tenant.strip()] = value
        items = pairs
    result = {}
    for tenant, value in items.items():
        try:
            result[tenant] = parse_duration(value, bare_unit)
        except InvalidDuration as exc:
            raise InvalidDuration('project %s: %s' % (tenant, exc)) from None
    return result


def default_shard_hours(hours: Optional[int]) -> int:
    """The shard group duration InfluxDB 1.x picks for a policy."""
    if hours is None or hours >= 24 * 183:
        return 24 * 7
    return 24 if hours >= 48 else 1


def _shard_duration(text: Optional[str],
                    what: str = '[dbpt] shard_duration') -> Optional[str]:
    """A shard group duration as InfluxDB takes it; a unit is required,
    since InfluxQL refuses a bare number (``expected duration``)."""
    if not text:
        return None
    value = str(text).strip()
    if not re.fullmatch(r'\d+[hdw]', value):
        raise InvalidOption('%s: shard duration %r: use <N>h, <N>d or <N>w, '
                            'e.g. 1d' % (what, text))
    try:
        parse_duration(value)
    except InvalidDuration as exc:
        raise InvalidOption('%s: %s' % (what, exc)) from None
    return value



class Retention:
    """Tenant id -> default policy and tiers, shard durations applied."""

    def __init__(self, *, db_per_tenant: bool = True,
                 default_retention_hours: int = 0,
                 overrides: Optional[Mapping[str, RetentionPolicy]] = None,
                 shard_duration: Optional[str] = None, tiers: tuple = (),
                 tenant_tiers: Optional[Mapping[str, tuple]] = None,
                 tier_lateness: int = 0) -> None:
        self.db_per_tenant = db_per_tenant
        self._lateness = tier_lateness
        self._shard_duration = _shard_duration(shard_duration)
        if default_retention_hours > 0:
            default = RetentionPolicy('%dh' % default_retention_hours,
                                      default_retention_hours)
        elif db_per_tenant:
            default = RetentionPolicy('autogen', None)
        else:
            default = None
        self.default = self._with_shard(default)
        self.overrides = {t: self._with_shard(rp) for t, rp in
                          (overrides or {}).items()}
        self.tiers = self._tiers_with_shard(tiers)
        self.tenant_tiers = {t: self._tiers_with_shard(tt) for t, tt in
                             (tenant_tiers or {}).items()}
        self._check_tiers()

    def policy_for(self, tenant_id: str) -> Optional[RetentionPolicy]:
        if self.db_per_tenant and tenant_id in self.overrides:
            return self.overrides[tenant_id]
        return self.default

    def tiers_for(self, tenant_id: str) -> tuple:
        if not self.db_per_tenant:
            return self.tiers
        return self.tenant_tiers.get(tenant_id, self.tiers)

    def _with_shard(self, rp: Optional[RetentionPolicy]):
        """*rp* with ``[dbpt] shard_duration``, or, for a policy shorter
        than that, the shard duration InfluxDB would choose for it (a shard
        group may never outlast its policy)."""
        if rp is None or not self._shard_duration:
            return rp
        shard = self._shard_duration
        if rp.hours is not None and parse_duration(shard).hours > rp.hours:
            shard = '%dh' % default_shard_hours(rp.hours)
        return dataclasses.replace(rp, shard_duration=shard)

    def _tiers_with_shard(self, tiers: tuple) -> tuple:
        """A tier's own shard duration wins over ``[dbpt] shard_duration``;
        every tier absorbs ``[dbpt] tier_lateness``."""
        return tuple(dataclasses.replace(
            t, lateness=self._lateness, policy=t.policy if
            t.policy.shard_duration else self._with_shard(t.policy))
            for t in tiers)

    def with_shard(self, rp: Optional[RetentionPolicy]):
        """A policy of the overrides file, shard duration applied."""
        return self._with_shard(rp)

    def tiers_with_shard(self, tiers: tuple) -> tuple:
        """Tiers of the overrides file, shard duration and lateness
        applied."""
        return self._tiers_with_shard(tiers)

    def _check_tiers(self) -> None:
        """A tier kept for less time than the raw data it summarises is
        a mistake (its means would expire first): refuse it at start."""
        cases = [('[dbpt] retention_tiers', None, self.tiers)]
        cases += [('[dbpt] tenant_tiers', t, tt)
                  for t, tt in self.tenant_tiers.items()]
        cases += [('[dbpt] retention_tiers', t, self.tiers)
                  for t in self.overrides if t not in self.tenant_tiers]
        for option, tenant, tiers in cases:
            check_tier_lengths(option, tenant, self.overrides.get(
                tenant, self.default) if tenant is not None else self.default,
                tiers)


def check_tier_lengths(option: str, tenant: Optional[str],
                       raw: Optional[RetentionPolicy], tiers: tuple) -> None:
    """Refuse a tier kept for less time than the raw policy."""
    if raw is None or raw.hours is None:
        return
    for tier in tiers:
        if tier.policy.hours is not None and tier.policy.hours < raw.hours:
            raise InvalidOption(
                '%s: tier %s is kept %s, shorter than the raw policy %s%s'
                % (option, tier.interval, tier.policy.duration, raw.duration,
                   ' of project %s' % tenant if tenant else ''))
