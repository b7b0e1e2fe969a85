"""InfluxQL statements with every identifier and literal quoted.

Quoting is influxdb-python's (``quote_ident``/``quote_literal``), so a
measurement or tenant id can never change the shape of a statement.
"""

from __future__ import annotations

from typing import Optional

from influxdb.line_protocol import quote_ident, quote_literal

from monasca_persister_dbpt.placement import RetentionPolicy

__all__ = ['quote_ident', 'quote_literal', 'create_database',
           'alter_default_policy', 'create_default_policy', 'create_policy',
           'alter_policy', 'downsample', 'create_continuous_query',
           'drop_continuous_query',
           'show_policies', 'show_series']


def _durations(rp: RetentionPolicy) -> str:
    clause = 'DURATION %s' % rp.duration
    if rp.shard_duration:
        clause += ' SHARD DURATION %s' % rp.shard_duration
    return clause


def create_database(database: str, rp: Optional[RetentionPolicy]) -> str:
    """One statement creating the database with its default policy.

    Re-running it against an identical database is a no-op, so racing
    persister processes are safe; a differing policy answers a conflict.
    """
    statement = 'CREATE DATABASE %s' % quote_ident(database)
    if rp is None:
        return statement
    return '%s WITH %s NAME %s' % (statement, _durations(rp),
                                   quote_ident(rp.name))


def alter_default_policy(database: str, existing_name: str,
                         rp: RetentionPolicy) -> str:
    """Bring the database's default policy to *rp*, keeping its data visible.

    The existing default is altered in place (not replaced by a new policy)
    because monasca-api reads the default policy: a new one would hide every
    point already stored.
    """
    return 'ALTER RETENTION POLICY %s ON %s %s DEFAULT' % (
        quote_ident(existing_name), quote_ident(database), _durations(rp))


def create_policy(database: str, rp: RetentionPolicy,
                  default: bool = False) -> str:
    # InfluxQL's order here is fixed: DURATION, REPLICATION, SHARD DURATION.
    statement = 'CREATE RETENTION POLICY %s ON %s DURATION %s REPLICATION 1' \
        % (quote_ident(rp.name), quote_ident(database), rp.duration)
    if rp.shard_duration:
        statement += ' SHARD DURATION %s' % rp.shard_duration
    return statement + (' DEFAULT' if default else '')


def create_default_policy(database: str, rp: RetentionPolicy) -> str:
    return create_policy(database, rp, default=True)


def alter_policy(database: str, rp: RetentionPolicy) -> str:
    return 'ALTER RETENTION POLICY %s ON %s %s' % (
        quote_ident(rp.name), quote_ident(database), _durations(rp))


#: What a tier keeps of ``value`` per interval: the mean as ``value`` (what
#: a reader of the tier expects) and what makes every statistic of
#: monasca-api exact over several intervals.
TIER_FIELDS = ('mean("value") AS "value", min("value") AS "min", '
               'max("value") AS "max", count("value") AS "count", '
               'sum("value") AS "sum"')


def downsample(database: str, tier, source_rp: str = '') -> str:
    """A tier's fields per interval, tags kept, into the tier's policy."""
    return ('SELECT %s INTO %s.%s.:MEASUREMENT '
            'FROM %s.%s./.*/' % (TIER_FIELDS, quote_ident(database),
                                  quote_ident(tier.policy.name),
                                  quote_ident(database),
                                  quote_ident(source_rp) if source_rp
                                  else ''))


def create_continuous_query(database: str, tier) -> str:
    """The tier's CQ; reads the default policy, where the persister writes.

    With a lateness it recomputes every interval that closed within it at
    each run (``RESAMPLE ... FOR``): a point coalesced or held that reaches
    InfluxDB after its interval closed is still in the tier.
    """
    resample = ''
    if getattr(tier, 'lateness', 0):
        span = -(-(tier.seconds + tier.lateness) // tier.seconds) * \
            tier.seconds
        resample = 'RESAMPLE EVERY %s FOR %ds ' % (tier.interval, span)
    return 'CREATE CONTINUOUS QUERY %s ON %s %sBEGIN %s GROUP BY time(%s), ' \
        '* END' % (quote_ident(tier.cq_name), quote_ident(database),
                   resample, downsample(database, tier), tier.interval)


def drop_continuous_query(database: str, name: str) -> str:
    return 'DROP CONTINUOUS QUERY %s ON %s' % (quote_ident(name),
                                               quote_ident(database))


def show_policies(database: str) -> str:
    return 'SHOW RETENTION POLICIES ON %s' % quote_ident(database)


def show_series(database: str, limit: int) -> str:
    return 'SHOW SERIES ON %s LIMIT %d' % (quote_ident(database), limit)
