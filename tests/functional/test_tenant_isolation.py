"""One tenant's permanent InfluxDB error never costs another tenant."""

import time

import pytest

from monasca_persister_dbpt.repositories.metrics import MetricsRepository
from tests import records

NOW = int(time.time() * 1000)
# Unicode 14 (MELTING FACE): printable for Python 3.11, not for the Go
# tables influxd 1.6 was built with, which answers "invalid name". The
# mapping cannot know every such gap; the writer must contain it.
REFUSED = 'bad\U0001FAE0'


def _count(influx, db, measurement='cpu.idle_perc'):
    rows = influx.rows('SELECT count(value) FROM "%s"' % measurement, db)
    return rows[0]['count'] if rows else 0


def _policy(influx, db):
    rows = influx.rows('SHOW RETENTION POLICIES ON "%s"' % db)
    return [(r['name'], r['duration'], r['shardGroupDuration'])
            for r in rows if r['default']][0]


def test_a_database_influxdb_refuses_costs_only_its_own_tenant(
        influx_conf, influx):
    influx_conf.set_override('tenant_id_pattern', r'\S{1,64}', 'dbpt')
    repo = MetricsRepository(influx_conf)
    start = time.monotonic()
    for batch in range(3):
        records.feed(repo, [records.metric(t, timestamp=NOW + batch * 10 + i)
                            for i in range(5) for t in ('a', REFUSED, 'b')])
    # No retry, no hold, no pause: the batches returned at once.
    assert time.monotonic() - start < influx_conf.dbpt.hold_after
    assert _count(influx, 'mon_a') == _count(influx, 'mon_b') == 15
    assert influx.databases() == {'mon_a', 'mon_b'}
    assert repo.stats.tenant(REFUSED)['dropped_database_refused'] == 15
    assert repo.stats.total('databases_refused') == 1  # tried once a minute
    assert repo.stats.total('retries') == 0
    assert not repo.writer.is_down(repo.placements.place('a').server)
    assert not repo.buffers.holding() and not repo.buffers.holding()


def test_a_statement_error_is_refused_without_a_backlog_too(
        influx_conf, influx):
    # Without held points a server-level fault fails the batch; a tenant's
    # refusal must not (it would be a poison pill: read again, forever).
    influx_conf.set_override('tenant_id_pattern', r'\S{1,64}', 'dbpt')
    influx_conf.set_override('held_points_max', 0, 'dbpt')
    repo = MetricsRepository(influx_conf)
    records.feed(repo, [records.metric(t, timestamp=NOW)
                        for t in (REFUSED, 'a')])
    assert _count(influx, 'mon_a') == 1


def test_an_override_shorter_than_the_existing_shards_is_applied(
        influx_conf, influx):
    # An existing database with InfluxDB's autogen policy (168h shards):
    # ALTER to 1d alone is refused by influxd, so the shards shrink too.
    influx.query('CREATE DATABASE "mon_bad"')
    influx_conf.set_override('retention_overrides', {'bad': '1d'}, 'dbpt')
    repo = MetricsRepository(influx_conf)
    records.feed(repo, [records.metric(t, timestamp=NOW)
                        for t in ('bad', 'good')])
    assert _policy(influx, 'mon_bad') == ('autogen', '24h0m0s', '1h0m0s')
    assert _count(influx, 'mon_bad') == _count(influx, 'mon_good') == 1
    assert repo.stats.total('policies_altered') == 1


def test_removing_an_override_brings_the_policy_back_to_infinite(
        influx_conf, influx):
    influx_conf.set_override('retention_overrides', {'gold': '1d'}, 'dbpt')
    records.feed(MetricsRepository(influx_conf),
                 [records.metric('gold', timestamp=NOW)])
    assert _policy(influx, 'mon_gold')[1] == '24h0m0s'
    influx_conf.clear_override('retention_overrides', 'dbpt')
    repo = MetricsRepository(influx_conf)
    records.feed(repo, [records.metric('gold', timestamp=NOW + 1)])
    assert _policy(influx, 'mon_gold')[1] == '0s'
    assert repo.stats.total('policies_altered') == 1
    assert _count(influx, 'mon_gold') == 2


def test_shard_duration_applies_to_tier_policies_and_never_outlasts_one(
        influx_conf, influx):
    influx_conf.set_override('shard_duration', '7d', 'dbpt')
    influx_conf.set_override('default_retention_hours', 48, 'influxdb')
    influx_conf.set_override('retention_tiers', ['5m:4w', '1h:260w'], 'dbpt')
    records.feed(MetricsRepository(influx_conf),
                 [records.metric('t', timestamp=NOW)])
    rows = {r['name']: r['shardGroupDuration'] for r in influx.rows(
        'SHOW RETENTION POLICIES ON "mon_t"')}
    # 48h is shorter than 7d: InfluxDB's own choice for 48h (1d) is used.
    assert rows == {'48h': '24h0m0s', 'tier_5m': '168h0m0s',
                    'tier_1h': '168h0m0s'}
    # A changed shard duration is reconciled like a changed duration.
    influx_conf.set_override('shard_duration', '1d', 'dbpt')
    records.feed(MetricsRepository(influx_conf),
                 [records.metric('t', timestamp=NOW + 1)])
    rows = {r['name']: r['shardGroupDuration'] for r in influx.rows(
        'SHOW RETENTION POLICIES ON "mon_t"')}
    assert rows == {'48h': '24h0m0s', 'tier_5m': '24h0m0s',
                    'tier_1h': '24h0m0s'}


@pytest.mark.parametrize('spill', [True, False], ids=['spilled', 'held'])
def test_waiting_points_follow_their_tenant_to_its_new_server(
        influx_conf, influx, tmp_path, spill):
    from tests import servers
    second = servers.InfluxServer(str(tmp_path / 'second')).start()
    try:
        mapping = tmp_path / 'tenant-servers'
        mapping.write_text('b two\n')
        influx_conf.set_override('servers', {'two': second.url}, 'dbpt')
        influx_conf.set_override('tenant_overrides_file', str(mapping), 'dbpt')
        influx_conf.set_override('hold_after', 0.5, 'dbpt')
        influx_conf.set_override('retry_timeout', 1.0, 'dbpt')
        if not spill:
            influx_conf.set_override('spill_dir', '', 'dbpt')
        repo = MetricsRepository(influx_conf)
        second.stop()
        records.feed(repo, [records.metric('b', timestamp=NOW + i)
                            for i in range(7)])
        if spill:
            assert repo.stats.total('points_spilled') == 7
            assert repo.buffers.held() == 0
        else:
            assert repo.buffers.held() == 7

        def waiting():
            return repo.buffers.holding() or (
                repo.buffers.spill is not None and
                repo.buffers.spill.used_bytes)
        assert waiting()
        # The operator moves b to the default server: its points follow.
        mapping.write_text('b default\n')
        repo.placements.server_map._next = 0  # skip the 10 s re-read wait
        deadline = time.monotonic() + 30
        while waiting() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not waiting()
        assert _count(influx, 'mon_b') == 7
    finally:
        second.close()


@pytest.mark.parametrize('option, value, message', [
    ('database_template', '{region}_{tenant_id}',
     r'\[dbpt\] database_template .*unknown placeholder \{region\}'),
    ('shard_duration', '24', r'\[dbpt\] shard_duration'),
    ('tenant_id_pattern', '[a-', r'\[dbpt\] tenant_id_pattern'),
    ('servers', {'default': 'http://127.0.0.1:1'}, r'\[dbpt\] servers'),
    ('hold_after', 600.0, r'\[dbpt\] hold_after .*retry_timeout'),
    ('retention_tiers', ['5m:1d'], r'retention_tiers: tier 5m is kept'),
])
def test_a_bad_option_stops_the_driver_at_start_naming_it(
        influx_conf, influx, option, value, message):
    influx_conf.set_override(option, value, 'dbpt')
    if option == 'retention_tiers':
        influx_conf.set_override('default_retention_hours', 48, 'influxdb')
    with pytest.raises(ValueError, match=message):
        MetricsRepository(influx_conf)
    assert influx.databases() == set()


def test_wrong_credentials_are_an_error_naming_the_server_not_a_loss(
        influx_conf, tmp_path, caplog):
    import logging

    from tests import servers
    guarded = servers.InfluxServer(str(tmp_path / 'auth'), auth=True).start()
    try:
        guarded.query("CREATE USER admin WITH PASSWORD 'right' WITH ALL "
                      "PRIVILEGES")
        influx_conf.set_override('port', guarded.port, 'influxdb')
        influx_conf.set_override('user', 'admin', 'influxdb')
        influx_conf.set_override('password', 'wrong', 'influxdb')
        influx_conf.set_override('hold_after', 0.5, 'dbpt')
        influx_conf.set_override('retry_timeout', 2.0, 'dbpt')
        repo = MetricsRepository(influx_conf)
        with caplog.at_level(logging.WARNING):
            records.feed(repo, [records.metric('t', timestamp=NOW)])
        errors = [r for r in caplog.records if r.levelno == logging.ERROR
                  and 'refuses our credentials' in r.getMessage()]
        assert len(errors) == 1  # rate-limited, not one per retry
        assert guarded.url in errors[0].getMessage()
        assert 'HTTP 401' in errors[0].getMessage()
        # That ERROR instead of server-down lines.
        assert not [r for r in caplog.records if 'marked down' in
                    r.getMessage() or 'failed (' in r.getMessage()]
        # Nothing lost: the point waits in the spill for the right
        # credentials (stored, so its record may be committed).
        assert repo.stats.total('points_spilled') == 1
        assert repo.buffers.spill.pending(repo.placements.default_server)
    finally:
        guarded.close()
