"""Retention tiers: policies and continuous queries on a real influxd (its
CQ service checks every second in the test config)."""

import time

from monasca_persister_dbpt.repositories.metrics import MetricsRepository
from tests import records
from tests.functional.test_migration import migrate


_feed = records.feed


def _policies(influx, db):
    return {r['name']: r['duration'] for r in influx.rows(
        'SHOW RETENTION POLICIES ON "%s"' % db)}


def _queries(influx, db):
    return {r['name'] for r in influx.rows('SHOW CONTINUOUS QUERIES')
            if r['_measurement'] == db}


def test_tiers_are_created_with_the_database_and_filled_by_their_query(
        influx_conf, influx):
    influx_conf.set_override('default_retention_hours', 24, 'influxdb')
    influx_conf.set_override('retention_tiers', ['5s:2d', '1h:1w'], 'dbpt')
    repo = MetricsRepository(influx_conf)
    now = int(time.time() * 1000)
    if now % 5000 > 3000:  # too close to the end of the interval
        time.sleep((5000 - now % 5000) / 1000 + 0.1)
        now = int(time.time() * 1000)
    bucket = now - now % 5000
    dims = {'hostname': 'h1'}
    _feed(repo, [records.metric('t', timestamp=bucket + 10, value=2.0,
                                dimensions=dims),
                 records.metric('t', timestamp=bucket + 20, value=4.0,
                                dimensions=dims)])
    assert _policies(influx, 'mon_t') == {
        '24h': '24h0m0s', 'tier_5s': '48h0m0s', 'tier_1h': '168h0m0s'}
    assert _queries(influx, 'mon_t') == {'dbpt_tier_5s', 'dbpt_tier_1h'}
    rows = []
    deadline = time.monotonic() + 30
    while not rows and time.monotonic() < deadline:
        time.sleep(0.5)
        rows = influx.rows('SELECT * FROM "tier_5s"."cpu.idle_perc" '
                           'GROUP BY *', 'mon_t')
    assert len(rows) == 1, rows
    assert rows[0]['value'] == 3.0 and rows[0]['time'] == bucket
    assert rows[0]['hostname'] == 'h1' and rows[0]['_tenant_id'] == 't'


def test_changed_tiers_are_reconciled_on_existing_databases(
        influx_conf, influx):
    influx_conf.set_override('retention_tiers', ['1m:1d'], 'dbpt')
    _feed(MetricsRepository(influx_conf), [records.metric('t', timestamp=1)])
    # a longer tier, a new one: the policy is altered, the query added
    influx_conf.set_override('retention_tiers', ['1m:2d', '1h:1w'], 'dbpt')
    _feed(MetricsRepository(influx_conf), [records.metric('t', timestamp=2)])
    assert _policies(influx, 'mon_t')['tier_1m'] == '48h0m0s'
    assert _queries(influx, 'mon_t') == {'dbpt_tier_1m', 'dbpt_tier_1h'}
    # per-tenant tiers win; a tier no longer wanted loses its query only
    influx_conf.set_override('tenant_tiers', ['t=1h:1w'], 'dbpt')
    _feed(MetricsRepository(influx_conf), [records.metric('t', timestamp=3)])
    assert _queries(influx, 'mon_t') == {'dbpt_tier_1h'}
    assert 'tier_1m' in _policies(influx, 'mon_t')


def test_migration_creates_the_tiers_and_backfills_them(
        influx, persister_conf, tmp_path):
    influx.query('CREATE DATABASE mon')
    now = int(time.time() * 1000)
    minute = now - now % 60000 - 10 * 60000
    lines = ['cpu.idle_perc,_region=r1,_tenant_id=ops,host=h value=%d,'
             'value_meta="{}" %d' % (v, minute + i * 1000)
             for i, v in enumerate((1, 2, 3, 6))]
    influx.write('mon', lines)
    with open(persister_conf, 'a') as handle:
        handle.write('retention_tiers = 1m:1d\n')
    migrate(persister_conf, '--verify', cwd=tmp_path, check=0)
    rows = influx.rows('SELECT * FROM "tier_1m"."cpu.idle_perc" GROUP BY *',
                       'mon_ops')
    assert [(r['time'], r['value'], r['host']) for r in rows] == [
        (minute, 3.0, 'h')]
    assert _queries(influx, 'mon_ops') == {'dbpt_tier_1m'}


def test_points_that_arrive_after_their_interval_closed_are_in_the_tier(
        influx_conf, influx):
    """Coalescing writes a quiet tenant's points up to max_delay late: the
    tier's query recomputes what closed within tier_lateness."""
    influx_conf.set_override('retention_tiers', ['10s:1d'], 'dbpt')
    influx_conf.set_override('tier_lateness', 0, 'dbpt')
    _feed(MetricsRepository(influx_conf), [records.metric('late', timestamp=1)])
    # An existing database's query is replaced with the lateness.
    influx_conf.set_override('tier_lateness', 60, 'dbpt')
    repo = MetricsRepository(influx_conf)
    _feed(repo, [records.metric('late', timestamp=2)])
    (query,) = [r['query'] for r in influx.rows('SHOW CONTINUOUS QUERIES')
                if r['_measurement'] == 'mon_late']
    assert 'RESAMPLE EVERY 10s FOR 70s' in query
    # Points of an interval that closed 15 s or more ago, written now.
    now = int(time.time() * 1000)
    bucket = (now - 25000) - (now - 25000) % 10000
    _feed(repo, [records.metric('late', timestamp=bucket + i * 500,
                                value=float(i)) for i in range(10)])
    rows = []
    deadline = time.monotonic() + 60
    while not rows and time.monotonic() < deadline:
        time.sleep(0.5)
        rows = influx.rows('SELECT "count", "sum" FROM "tier_10s".'
                           '"cpu.idle_perc" WHERE time = %dms' % bucket,
                           'mon_late')
    assert rows and rows[0]['count'] == 10 and rows[0]['sum'] == 45.0, rows


def test_a_lateness_shorter_than_max_delay_is_refused_naming_both(
        influx_conf):
    import pytest
    influx_conf.set_override('retention_tiers', ['10s:1d'], 'dbpt')
    influx_conf.set_override('max_delay', 30.0, 'dbpt')
    influx_conf.set_override('tier_lateness', 10, 'dbpt')
    with pytest.raises(ValueError, match=r'tier_lateness.*max_delay'):
        MetricsRepository(influx_conf)
