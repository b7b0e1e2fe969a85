"""The drivers against a real influxd: databases, policies, error table."""

import time

import pytest

from monasca_persister_dbpt.influx.writer import WriteFailed
from monasca_persister_dbpt.repositories.alarm_state_history import \
    AlarmStateHistoryRepository
from monasca_persister_dbpt.repositories.metrics import MetricsRepository
from tests import records

NOW = int(time.time() * 1000)


_feed = records.feed


def _count(influx, db, measurement='cpu.idle_perc'):
    rows = influx.rows('SELECT count(value) FROM "%s"' % measurement, db)
    return rows[0]['count'] if rows else 0


def test_each_tenant_lands_in_its_own_database(influx_conf, influx):
    repo = MetricsRepository(influx_conf)
    recs = [records.metric('tenant%d' % (i % 3), timestamp=NOW - i)
            for i in range(300)]
    _feed(repo, recs)
    assert influx.databases() == {'mon_tenant0', 'mon_tenant1',
                                  'mon_tenant2'}
    for t in range(3):
        db = 'mon_tenant%d' % t
        assert _count(influx, db) == 100
        tenants = {r['_tenant_id'] for r in influx.rows(
            'SELECT * FROM "cpu.idle_perc" GROUP BY *', db)}
        assert tenants == {'tenant%d' % t}
    assert repo.stats.total('points_written') == 300
    assert repo.stats.total('databases_created') == 3


def test_points_read_back_as_monasca_api_expects(influx_conf, influx):
    repo = MetricsRepository(influx_conf)
    _feed(repo, [records.metric('t1', name='disk used', timestamp=NOW,
                                dimensions={'mount': '/ var', 'x': 'a=b,c'},
                                value=3, value_meta={'msg': 'é "q"'},
                                region='Region One')])
    (row,) = influx.rows('SELECT * FROM "disk used" GROUP BY *', 'mon_t1')
    assert row['mount'] == '/ var' and row['x'] == 'a=b,c'
    assert row['_tenant_id'] == 't1' and row['_region'] == 'Region One'
    assert row['value'] == 3.0 and row['time'] == NOW
    assert row['value_meta'] == '{"msg": "é \\"q\\""}'


def test_shared_mode_writes_the_shared_database(influx_conf, influx):
    influx_conf.set_override('db_per_tenant', False, 'influxdb')
    repo = MetricsRepository(influx_conf)
    _feed(repo, [records.metric('a', timestamp=NOW),
                 records.metric('b', timestamp=NOW)])
    assert influx.databases() == {'mon'}
    assert _count(influx, 'mon') == 2


def test_alarm_history_lands_in_the_tenant_database(influx_conf, influx):
    repo = AlarmStateHistoryRepository(influx_conf)
    _feed(repo, [records.alarm('t1', timestamp=NOW),
                 records.alarm('t2', timestamp=NOW, new_state='OK')])
    (row,) = influx.rows('SELECT * FROM alarm_state_history', 'mon_t2')
    assert row['tenant_id'] == 't2' and row['new_state'] == 'OK'
    assert '"sub_alarm_expression"' in row['sub_alarms']
    assert influx.databases() == {'mon_t1', 'mon_t2'}


def _default_policy(influx, db):
    rows = influx.rows('SHOW RETENTION POLICIES ON "%s"' % db)
    return next((r['name'], r['duration']) for r in rows if r['default'])


def test_database_is_created_with_its_retention_policy(influx_conf, influx):
    influx_conf.set_override('default_retention_hours', 48, 'influxdb')
    influx_conf.set_override('retention_overrides', {'gold': '2w'}, 'dbpt')
    repo = MetricsRepository(influx_conf)
    _feed(repo, [records.metric('gold', timestamp=NOW),
                 records.metric('plain', timestamp=NOW)])
    assert _default_policy(influx, 'mon_gold') == ('2w', '336h0m0s')
    assert _default_policy(influx, 'mon_plain') == ('48h', '48h0m0s')


def test_changed_override_is_altered_on_the_existing_database(
        influx_conf, influx):
    influx_conf.set_override('retention_overrides', {'gold': '2w'}, 'dbpt')
    _feed(MetricsRepository(influx_conf),
          [records.metric('gold', timestamp=NOW)])
    influx_conf.set_override('retention_overrides', {'gold': '1d'}, 'dbpt')
    repo = MetricsRepository(influx_conf)  # a restarted persister
    _feed(repo, [records.metric('gold', timestamp=NOW + 1)])
    assert _default_policy(influx, 'mon_gold') == ('2w', '24h0m0s')
    assert _count(influx, 'mon_gold') == 2  # old points still visible
    assert repo.stats.total('policies_altered') == 1


def test_many_new_tenants_are_created_in_few_requests(influx_conf, influx,
                                                      monkeypatch):
    repo = MetricsRepository(influx_conf)
    queries = []
    real = repo.writer.query
    monkeypatch.setattr(repo.writer, 'query',
                        lambda s, q: queries.append(q) or real(s, q))
    _feed(repo, [records.metric('t%03d' % i, timestamp=NOW)
                 for i in range(600)])
    assert len(influx.databases()) == 600
    assert len(queries) <= 3  # SHOW DATABASES + 2 x 500 statements


def test_racing_processes_create_the_same_database_safely(influx_conf,
                                                          influx):
    influx_conf.set_override('default_retention_hours', 24, 'influxdb')
    a, b = MetricsRepository(influx_conf), MetricsRepository(influx_conf)
    _feed(a, [records.metric('t', timestamp=NOW)])
    _feed(b, [records.metric('t', timestamp=NOW + 1)])
    assert _count(influx, 'mon_t') == 2


def test_database_dropped_mid_run_is_created_again(influx_conf, influx):
    repo = MetricsRepository(influx_conf)
    _feed(repo, [records.metric('t', timestamp=NOW)])
    influx.query('DROP DATABASE "mon_t"')
    _feed(repo, [records.metric('t', timestamp=NOW + 1)])
    assert _count(influx, 'mon_t') == 1


def test_points_beyond_retention_are_counted_and_the_rest_written(
        influx_conf, influx):
    influx_conf.set_override('default_retention_hours', 1, 'influxdb')
    repo = MetricsRepository(influx_conf)
    old = NOW - 10 * 24 * 3600 * 1000
    _feed(repo, [records.metric('t', timestamp=old),
                 records.metric('t', timestamp=NOW),
                 records.metric('u', timestamp=NOW)])
    assert _count(influx, 'mon_t') == 1 and _count(influx, 'mon_u') == 1
    # Refused before InfluxDB, with its reason...
    assert repo.stats.tenant('t') == {'refused_too_old': 1,
                                      'points_written': 1,
                                      'databases_created': 1,
                                      'write_requests': 1}
    # ...and one that aged while buffered is InfluxDB's partial write.
    placement = repo.placements.place('t')
    repo.writer.write(placement, ['cpu.idle_perc value=1 %d' % old,
                                  'cpu.idle_perc value=2 %d' % (NOW + 5)])
    assert _count(influx, 'mon_t') == 2
    assert repo.stats.total('dropped_beyond_retention') == 1


def test_field_type_conflict_drops_only_the_conflicting_points(
        influx_conf, influx):
    # Someone else wrote "value" as a string into this tenant's database.
    influx.query('CREATE DATABASE mon_t')
    influx.write('mon_t', ['cpu.idle_perc,hostname=h value="text" %d' % NOW])
    repo = MetricsRepository(influx_conf)
    _feed(repo, [records.metric('t', timestamp=NOW + i) for i in range(1, 4)]
          + [records.metric('u', timestamp=NOW)])
    assert _count(influx, 'mon_u') == 1
    assert repo.stats.total('dropped_field_type_conflict') == 3


def test_whole_request_refusals_are_split_to_keep_valid_lines(
        influx_conf, influx):
    repo = MetricsRepository(influx_conf)
    batch = repo.data_points_class()
    lines = ['m,k=v value=%d.0 %d' % (i, NOW + i) for i in range(10)]
    lines[3] = 'm,k=v value="a string" %d' % (NOW + 3)  # conflicts in-request
    for line in lines:
        batch.append('t', line)
    repo.write_batch(batch)
    assert _count(influx, 'mon_t', 'm') == 9
    assert repo.stats.total('dropped_field_type_conflict') == 1


def test_long_lines_are_all_written_within_the_memory_budget(influx_conf,
                                                             influx):
    """Lines of 8 KB (32 dimensions of 250 characters, each within
    monasca-api's limits): buffered_memory_mb 1 holds about 120 of them,
    far below buffered_points_max, and every point is written."""
    influx_conf.set_override('buffered_memory_mb', 1, 'dbpt')
    repo = MetricsRepository(influx_conf)
    recs = [records.metric('t%d' % (i % 4), timestamp=NOW - i, dimensions={
        'd%02d' % d: '%03d' % (i % 50) + 'x' * 247 for d in range(32)})
        for i in range(2000)]
    _feed(repo, recs)
    for t in range(4):
        assert _count(influx, 'mon_t%d' % t) == 500
    bound = repo.stats.gauges()['buffered_points_bound']
    assert 60 <= bound <= 200, bound
    assert repo.stats.total('points_written') == 2000


def test_unreachable_influxdb_fails_the_batch_after_the_bound(influx_conf):
    influx_conf.set_override('port', 1, 'influxdb')  # nothing listens
    influx_conf.set_override('retry_timeout', 1.0, 'dbpt')
    influx_conf.set_override('held_points_max', 0, 'dbpt')
    repo = MetricsRepository(influx_conf)
    start = time.monotonic()
    with pytest.raises(WriteFailed, match='still failing'):
        _feed(repo, [records.metric('t', timestamp=NOW)])
    assert 0.9 < time.monotonic() - start < 10
    assert repo.stats.total('retries') >= 2


def test_influxdb_back_within_the_bound_loses_nothing(influx_conf, influx):
    import threading
    influx_conf.set_override('retry_timeout', 30.0, 'dbpt')
    influx_conf.set_override('hold_after', 20.0, 'dbpt')
    repo = MetricsRepository(influx_conf)
    _feed(repo, [records.metric('t', timestamp=NOW)])
    influx.stop()
    restarter = threading.Thread(target=influx.restart_after, args=(0,))
    timer = threading.Timer(2.0, restarter.start)
    timer.start()
    try:
        _feed(repo, [records.metric('t', timestamp=NOW + i)
                     for i in range(1, 50)])
    finally:
        timer.join()
        restarter.join()
    assert _count(influx, 'mon_t') == 50
    assert repo.stats.total('retries') >= 1


def test_a_changed_policy_amid_a_batch_of_databases_is_altered(
        influx_conf, influx):
    # InfluxDB reports a failing statement of a multi-statement request only
    # as "not executed"; the schema must still find and settle it.
    influx_conf.set_override('default_retention_hours', 24, 'influxdb')
    _feed(MetricsRepository(influx_conf), [
        records.metric(t, timestamp=NOW) for t in ('a', 'b', 'c')])
    influx_conf.set_override('retention_overrides', {'b': '2d'}, 'dbpt')
    repo = MetricsRepository(influx_conf)
    _feed(repo, [records.metric(t, timestamp=NOW + 1)
                 for t in ('a', 'b', 'c', 'd')])
    assert _default_policy(influx, 'mon_b') == ('24h', '48h0m0s')
    assert _default_policy(influx, 'mon_d') == ('24h', '24h0m0s')
    assert [_count(influx, 'mon_' + t) for t in 'abcd'] == [2, 2, 2, 1]
    assert repo.stats.total('policies_altered') == 1


@pytest.fixture
def two_servers(influx_conf, tmp_path):
    """Tenant b on a second real influxd, everyone else on the first."""
    from tests import servers
    second = servers.InfluxServer(str(tmp_path / 'second')).start()
    mapping = tmp_path / 'tenant-servers'
    mapping.write_text('b two\n')
    influx_conf.set_override('servers', {'two': second.url}, 'dbpt')
    influx_conf.set_override('tenant_overrides_file', str(mapping), 'dbpt')
    yield second
    second.close()


def test_tenants_on_another_server_are_written_there_and_isolated(
        influx_conf, influx, two_servers):
    repo = MetricsRepository(influx_conf)
    _feed(repo, [records.metric(t, timestamp=NOW) for t in 'ab'])
    assert influx.databases() == {'mon_a'}
    assert two_servers.databases() == {'mon_b'}


def test_without_a_spill_a_down_server_delays_only_its_tenants(
        influx_conf, influx, two_servers):
    influx_conf.set_override('hold_after', 0.5, 'dbpt')
    influx_conf.set_override('retry_timeout', 1.0, 'dbpt')
    influx_conf.set_override('spill_dir', '', 'dbpt')
    repo = MetricsRepository(influx_conf)
    _feed(repo, [records.metric(t, timestamp=NOW) for t in 'ab'])
    two_servers.stop()
    # Both batches return: a is written, b is held and commits wait.
    _feed(repo, [records.metric(t, timestamp=NOW + 1) for t in 'ab'])
    _feed(repo, [records.metric(t, timestamp=NOW + 2 + i)
                 for i in range(10) for t in 'ab'])
    assert _count(influx, 'mon_a') == 12
    assert repo.buffers.held() == 11
    assert repo.stats.total('points_held') == 11
    assert repo.stats.snapshot()['gauges']['held_points'] == 11
    assert repo.buffers.holding()
    two_servers.start()  # same port, same data directory
    deadline = time.monotonic() + 60
    while repo.buffers.holding() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not repo.buffers.holding()
    assert _count(two_servers, 'mon_b') == 12
    assert repo.stats.total('points_replayed') == 11
    assert repo.stats.snapshot()['gauges']['held_points'] == 0
    assert not repo.buffers.holding()
    # Once it answers, its tenants are written directly again.
    _feed(repo, [records.metric('b', timestamp=NOW + 20)])
    assert _count(two_servers, 'mon_b') == 13


def test_without_a_backlog_a_down_server_fails_the_batch(
        influx_conf, influx, two_servers):
    influx_conf.set_override('held_points_max', 0, 'dbpt')
    influx_conf.set_override('retry_timeout', 1.0, 'dbpt')
    repo = MetricsRepository(influx_conf)
    assert repo.buffers._hold_after is None
    two_servers.stop()
    with pytest.raises(WriteFailed, match='still failing'):
        _feed(repo, [records.metric(t, timestamp=NOW + 1) for t in 'ab'])
    assert _count(influx, 'mon_a') == 1


def test_with_the_spill_a_down_servers_points_are_stored_and_replayed(
        influx_conf, influx, two_servers):
    influx_conf.set_override('hold_after', 0.5, 'dbpt')
    influx_conf.set_override('retry_timeout', 1.0, 'dbpt')
    repo = MetricsRepository(influx_conf)
    _feed(repo, [records.metric(t, timestamp=NOW) for t in 'ab'])
    two_servers.stop()
    _feed(repo, [records.metric(t, timestamp=NOW + 1 + i)
                 for i in range(11) for t in "ab"])
    # Every point is stored: a's written, b's spilled; nothing is held.
    assert _count(influx, 'mon_a') == 12
    assert repo.buffers.held() == 0 and not repo.buffers.holding()
    assert repo.stats.total('points_spilled') == 11
    assert repo.buffers.spill.pending(repo.placements.place('b').server)
    status = repo.outages.status()[two_servers.url]
    assert status['spilled'] == 11 and status['held'] == 0
    assert repo.stats.labelled_gauges()['server_up'][1][two_servers.url] == 0
    two_servers.start()
    deadline = time.monotonic() + 60
    while _count_or_0(two_servers, 'mon_b') < 12 and \
            time.monotonic() < deadline:
        time.sleep(0.2)
    assert _count(two_servers, 'mon_b') == 12
    while repo.buffers.spill.used_bytes and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not repo.buffers.spill.pending(repo.placements.place('b').server)
    _feed(repo, [records.metric('b', timestamp=NOW + 20)])
    assert _count(two_servers, 'mon_b') == 13


def _count_or_0(server, db):
    try:
        return _count(server, db)
    except Exception:  # noqa: BLE001 - not there yet
        return 0
