"""Moving a tenant's data never destroys or misfiles it (real influxd, the
console script as an operator types it): one server under two names, a
policy the placement does not know, a target database gone, a source that
keeps growing during the pass, and statistics during a move."""

import os
import subprocess
import sys
import time

import pytest

from monasca_persister_dbpt.influx import identity
from monasca_persister_dbpt.migrate import cli
from monasca_persister_dbpt.placement import PlacementMap, Server
from monasca_persister_dbpt.placement import moves
from monasca_persister_dbpt.repositories.metrics import MetricsRepository

NOW_S = int(time.time()) // 60 * 60
SCRIPT = os.path.join(os.path.dirname(sys.executable),
                      'monasca-persister-dbpt-migrate')


def _migrate(config, *args):
    """The console script, as an operator runs it (in the config's folder:
    its checkpoint lands there)."""
    done = subprocess.run([SCRIPT, '--config-file', config] + list(args),
                          capture_output=True, text=True, timeout=600,
                          cwd=os.path.dirname(config))
    return done.returncode, done.stdout, done.stderr


def _config(tmp_path, influx, extra='', retention_hours=24):
    path = tmp_path / 'persister.conf'
    path.write_text(
        '[DEFAULT]\nlog_file = %s\n\n[influxdb]\ndatabase_name = mon\n'
        'db_per_tenant = True\nip_address = %s\nport = %d\n'
        'default_retention_hours = %d\n\n[dbpt]\nretry_timeout = 10\n%s'
        % (tmp_path / 'migrate.log', influx.host, influx.port,
           retention_hours, extra))
    return str(path)


def _count(server, db, measurement='cpu.idle_perc', rp='', field='value'):
    rows = server.rows('SELECT count(%s) FROM %s"%s"' % (
        field, '"%s".' % rp if rp else '', measurement), db)
    return rows[0]['count'] if rows else 0


def _raw(server, db, tenant, n, start_s, step_s=60, host='h0'):
    server.write(db, ['cpu.idle_perc,_region=RegionOne,_tenant_id=%s,'
                      'hostname=%s value=%d,value_meta="{}" %d'
                      % (tenant, host, i, (start_s + i * step_s) * 1000)
                      for i in range(n)])


# -- 1. one server under two names ------------------------------------------

def test_one_server_under_two_names_is_refused_and_nothing_is_dropped(
        influx, tmp_path, influx_conf):
    overrides = tmp_path / 'overrides'
    overrides.write_text('an same\n')
    influx.query('CREATE DATABASE mon_an')
    _raw(influx, 'mon_an', 'an', 50, NOW_S - 3600)
    config = _config(tmp_path, influx, 'servers = same:http://localhost:%d\n'
                     'tenant_overrides_file = %s\n' % (influx.port, overrides))
    rc, out, err = _migrate(config, '--rebalance', '--drop-source',
                            '--settle-seconds', '0')
    assert rc == 2, (out, err)
    assert "'default' ([influxdb] ip_address/port, http://127.0.0.1:%d)" \
        % influx.port in err and \
        "'same' ([dbpt] servers, http://localhost:%d)" % influx.port in err
    assert 'are one InfluxDB server' in err
    assert 'rebalance:' not in out       # nothing was even looked for
    assert _count(influx, 'mon_an') == 50
    # The migration refuses the same configuration, and so does the
    # persister's driver at start-up.
    rc, out, err = _migrate(config)
    assert rc == 2 and 'are one InfluxDB server' in err
    influx_conf.set_override('servers', {'same': 'http://localhost:%d'
                                         % influx.port}, 'dbpt')
    with pytest.raises(identity.SameServer, match="'same'"):
        MetricsRepository(influx_conf)
    # The id lives in a database no tenant maps to.
    assert PlacementMap().tenant_of(identity.DATABASE) is None


def test_two_servers_get_distinct_ids_and_keep_them(influx, two, influx_conf):
    servers = {'default': Server(influx.host, influx.port),
               'two': Server(two.host, two.port)}
    from monasca_persister_dbpt.influx.writer import InfluxWriter
    writer = InfluxWriter(retry_timeout=5)
    first = identity.identify(writer, servers)
    again = identity.identify(writer, servers)
    assert first.ids == again.ids and len(first.ids) == 2
    assert first.ids['default'] != first.ids['two']
    assert identity.distinct(writer, servers['default'],
                             servers['two']) is None


def test_a_server_met_by_two_processes_at_once_is_not_taken_for_empty(
        influx, two, monkeypatch):
    """The metrics and alarms persisters meet a new server together: both
    write an id and one of them finds the other's peer record; only a
    server that lost the id it was met by came back empty."""
    from monasca_persister_dbpt.influx.writer import InfluxWriter
    servers = {'default': Server(influx.host, influx.port),
               'two': Server(two.host, two.port)}
    writer = InfluxWriter(retry_timeout=5)
    assert identity.identify(writer, servers).new == []
    real = identity.ensure_id

    def raced(writer, server, retry_for):
        """The second process read no id before the first one wrote."""
        if server.port != two.port:
            return real(writer, server, retry_for)
        two.write(identity.DATABASE, '%s id="second" %d' % (
            identity.MEASUREMENT, time.time_ns()), precision='ns')
        return True
    monkeypatch.setattr(identity, 'ensure_id', raced)
    assert identity.identify(writer, servers).new == []
    monkeypatch.setattr(identity, 'ensure_id', real)
    two.query('DROP DATABASE %s' % identity.DATABASE)
    assert identity.identify(writer, servers).new == ['two']
    assert identity.identify(writer, servers).new == []


# -- 2. a policy the placement does not know --------------------------------

def _old_tier_tenant(source, tenant):
    """A tenant database on *source*: 120 raw points, and a tier_5m policy
    (from an earlier tenant_tiers) with 6 recent and 12 older rows."""
    db = 'mon_' + tenant
    source.query('CREATE DATABASE %s WITH DURATION 24h NAME "24h"' % db)
    source.query('CREATE RETENTION POLICY tier_5m ON %s DURATION 4w '
                 'REPLICATION 1' % db)
    _raw(source, db, tenant, 120, NOW_S - 7200)
    rows = [(NOW_S - 3600 + i * 300) for i in range(6)] + \
        [(NOW_S - 86400 * (2 + i)) for i in range(12)]
    source.write(db, ['cpu.idle_perc,_region=RegionOne,_tenant_id=%s,'
                      'hostname=h0 value=%d,min=1,max=9,count=%di,sum=%d %d'
                      % (tenant, i, 5 + i, 5 * i, t * 1000)
                      for i, t in enumerate(rows)], rp='tier_5m')
    return db


def test_a_policy_the_placement_does_not_know_moves_into_its_own_name(
        influx, two, tmp_path):
    db = _old_tier_tenant(influx, 'tp')
    overrides = tmp_path / 'overrides'
    overrides.write_text('tp two\n')
    config = _config(tmp_path, influx, 'retention_tiers = 1h:8w\nservers = '
                     'two:%s\ntenant_overrides_file = %s\n'
                     % (two.url, overrides))
    rc, out, err = _migrate(config, '--rebalance', '--drop-source',
                            '--settle-seconds', '0')
    assert rc == 0, (out, err)
    assert '1 of 1 move(s) verified, 1 source(s) dropped; 0 failed' in out
    # Raw stays raw; the tier rows keep their own policy, all 18 of them,
    # with their integer count.
    assert _count(two, db) == 120
    assert _count(two, db, rp='tier_5m') == 18
    kinds = {r['fieldKey']: r['fieldType'] for r in two.rows(
        'SHOW FIELD KEYS FROM "tier_5m"."cpu.idle_perc"', db)}
    assert kinds['count'] == 'integer'
    policies = {r['name']: r for r in two.rows('SHOW RETENTION POLICIES',
                                                db)}
    assert policies['tier_5m']['duration'] == '672h0m0s'
    assert not policies['tier_5m']['default']
    assert db not in influx.databases()


def test_a_policy_that_differs_on_the_target_stops_that_move_and_keeps_it(
        influx, two, tmp_path):
    db = _old_tier_tenant(influx, 'tq')
    two.query('CREATE DATABASE %s WITH DURATION 24h NAME "24h"' % db)
    two.query('CREATE RETENTION POLICY tier_5m ON %s DURATION 1w '
              'REPLICATION 1' % db)
    overrides = tmp_path / 'overrides'
    overrides.write_text('tq two\n')
    config = _config(tmp_path, influx, 'servers = two:%s\n'
                     'tenant_overrides_file = %s\n' % (two.url, overrides))
    rc, out, err = _migrate(config, '--rebalance', '--drop-source',
                            '--settle-seconds', '0')
    assert rc == 1, (out, err)
    assert 'failed tenant tq' in out
    assert 'policy "tier_5m" keeps 672h0m0s in the old copy but 168h0m0s' \
        in out
    assert _count(influx, db) == 120 and _count(influx, db,
                                                rp='tier_5m') == 18
    assert _count(two, db) == 0


# -- 3. a target database gone ----------------------------------------------

def _shared(influx, tenants, per_tenant, step_s=1200, names=()):
    influx.query('CREATE DATABASE mon')
    for tenant in tenants:
        _raw(influx, 'mon', tenant, per_tenant,
             NOW_S - per_tenant * step_s, step_s)
        for name in names:
            influx.write('mon', ['%s,_region=RegionOne,_tenant_id=%s '
                                 'value=%d %d' % (name, tenant, i,
                                                  (NOW_S - i * 60) * 1000)
                                 for i in range(10)])


def test_verification_repairs_a_target_database_that_is_gone(influx,
                                                              tmp_path):
    # Several measurements: InfluxDB answers "not executed" for the counts
    # after the one that found no database.
    _shared(influx, ['ta', 'tb'], 200, names=('mem.free_mb', 'disk.used'))
    config = _config(tmp_path, influx, retention_hours=0)
    rc, out, err = _migrate(config)
    assert rc == 0, (out, err)
    influx.query('DROP DATABASE mon_tb')
    rc, out, err = _migrate(config)
    assert rc == 0, (out, err)
    assert 'database "mon_tb" of tenant tb is missing on server %s' \
        % influx.url in out
    assert 'MISMATCH' not in out
    for db in ('mon_ta', 'mon_tb'):
        assert _count(influx, db) == 200
        assert _count(influx, db, 'mem.free_mb') == 10
        assert _count(influx, db, 'disk.used') == 10
    assert _count(influx, 'mon') == 400          # the source, untouched


# -- 4. a source that keeps growing -----------------------------------------

def test_a_pass_over_a_growing_source_exits_0_and_says_what_arrived(
        influx, tmp_path, monkeypatch, capsys):
    tenants = ['l0', 'l1', 'l2']
    _shared(influx, tenants, 3000)
    config = _config(tmp_path, influx, retention_hours=0)
    original = cli.Copier.run
    arrived = []

    def copy_then_more_arrive(self, plan, progress):
        # After every copy of the pass (its repair rounds too) more late
        # points arrive, as on a live system: now, three weeks back (units
        # already copied) and in a unit that was empty when it planned.
        original(self, plan, progress)
        base = len(arrived)
        lines = ['cpu.idle_perc,_region=RegionOne,_tenant_id=l0,hostname=late'
                 ' value=%d,value_meta="{}" %d' % (
                     i, (NOW_S - back) * 1000 + base + i)
                 for i, back in enumerate([0] * 10 + [21 * 86400] * 10 +
                                          [60 * 7 * 86400] * 10)]
        influx.write('mon', lines)
        arrived.extend(lines)
    monkeypatch.setattr(cli.Copier, 'run', copy_then_more_arrive)
    argv = ['--config-file', config, '--checkpoint',
            str(tmp_path / 'checkpoint.jsonl')]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert '30 point(s) reached the source after this pass counted them' \
        in out and 'tenant(s) l0' in out
    assert 'MISMATCH' not in out
    # The next pass (the delta) copies them: every count equal.
    monkeypatch.setattr(cli.Copier, 'run', original)
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert 'reached the source' not in out
    assert len(arrived) == 30
    assert _count(influx, 'mon_l0') == 3030
    assert _count(influx, 'mon_l1') == _count(influx, 'mon_l2') == 3000


def test_a_copy_that_lost_points_is_still_told_apart_from_arrivals(
        influx, tmp_path, monkeypatch, capsys):
    """Points lost from a target beside points that arrived: the loss is a
    mismatch that the repair rounds copy again, never hidden as new."""
    _shared(influx, ['m0'], 500)
    config = _config(tmp_path, influx, retention_hours=0)
    original = cli.Copier.run
    calls = []

    def copy_then_lose(self, plan, progress):
        original(self, plan, progress)
        calls.append(len(plan.chunks))
        if len(calls) == 1:
            influx.query('DELETE FROM "cpu.idle_perc" WHERE time < %ds'
                         % (NOW_S - 250 * 1200), 'mon_m0')
            _raw(influx, 'mon', 'm0', 3, NOW_S + 5, 1, host='late')
    monkeypatch.setattr(cli.Copier, 'run', copy_then_lose)
    assert cli.main(['--config-file', config, '--checkpoint',
                     str(tmp_path / 'checkpoint.jsonl')]) == 0
    assert len(calls) == 2          # one repair round
    assert _count(influx, 'mon_m0') == 503


# -- 5. statistics during a move --------------------------------------------

def test_statistics_during_a_move_count_what_a_listing_shows(
        influx, two, tmp_path):
    from oslo_config import cfg
    from tests.functional.test_rebalance import _reader
    placements = PlacementMap(server=Server(influx.host, influx.port),
                              servers={'two': Server(two.host, two.port)},
                              hash_servers=['default', 'two'])
    tenant = next('mv%d' % i for i in range(100) if placements.place(
        'mv%d' % i).server.port == two.port)
    db = 'mon_' + tenant
    start = NOW_S - 7200
    split = (start + 60 * 60) * 10 ** 9
    for server in (influx, two):
        server.query('CREATE DATABASE %s' % db)
    _raw(influx, db, tenant, 60, start)                   # before the split
    two.write(db, ['cpu.idle_perc,_region=RegionOne,_tenant_id=%s,hostname='
                   'h0 value=%d,value_meta="{}" %d' % (tenant, i, (
                       start + i * 60) * 1000) for i in range(60, 90)])
    # Written to the old copy after the split by a persister on the old
    # map: one point the new server lacks, one it holds already.
    for i, servers in ((90, (influx,)), (95, (influx, two))):
        for server in servers:
            server.write(db, 'cpu.idle_perc,_region=RegionOne,_tenant_id=%s,'
                         'hostname=h0 value=%d,value_meta="{}" %d'
                         % (tenant, i, (start + i * 60) * 1000))
    two.query('CREATE DATABASE %s' % moves.DATABASE)
    two.write(moves.DATABASE, moves.marker_line(moves.Move(
        tenant, influx.url, split, moves.COPYING)), precision='ns')
    repo = _reader(tmp_path, influx, {'two': two.url}, ['default', 'two'])
    try:
        repo.moves.refresh(force=True)
        (listed,) = repo.measurement_list(
            tenant, 'RegionOne', 'cpu.idle_perc', {'hostname': 'h0'},
            start - 1, start + 7200, None, 10000, False, None)
        values = [m[1] for m in listed['measurements']]
        assert values == [float(i) for i in list(range(91)) + [95]]
        shapes = [(period, None) for period in (60, 600, 3600)] + \
            [(600, '*'), (600, 'hostname')]
        seen = {}
        for period, group_by in shapes:
            (stats,) = repo.metrics_statistics(
                tenant, 'RegionOne', 'cpu.idle_perc', {'hostname': 'h0'},
                start - 1, start + 7200, ['count', 'sum', 'max', 'avg'],
                period, None, 1000, False, group_by)
            rows = stats['statistics']
            seen[(period, group_by)] = rows
            # One row per period, whatever the shape.
            assert len({r[0] for r in rows}) == len(rows), rows
            assert sum(r[1] for r in rows) == 92, (period, group_by, rows)
            assert sum(r[2] for r in rows) == sum(range(91)) + 95
            assert max(r[3] for r in rows) == 95
        assert seen[(600, None)] == seen[(600, '*')] == \
            seen[(600, 'hostname')]
    finally:
        cfg.CONF.reset()
        cfg.CONF.clear()
