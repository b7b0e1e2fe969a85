"""The migration console script, run as an operator runs it, on a real influxd."""

import os
import signal
import subprocess
import sys
import time

import pytest


NOW_MS = int(time.time() * 1000)
DAY_MS = 86400 * 1000
TENANTS = ['0f1e2d3c4b5a69788796a5b4c3d2e1f0', 'project', 'project2', 'ops']
MEASUREMENTS = ['cpu.idle_perc', 'disk used', 'q"uote', 'back\\slash',
                'comma,eq=', "it's", 'regex.*+?(x', 'log.api']
HOSTILE_TENANT = "evil'tenant"


def _esc(text):
    # InfluxDB 1.6 keeps a backslash in a measurement name as it is.
    return text.replace(' ', '\\ ').replace(',', '\\,').replace('=', '\\=')


def seed(influx, weeks=3, per_day=2, future=True):
    """The shared database: tenants x measurements x days, two policies,
    alarm history, a future point, and a tenant the mapping refuses."""
    influx.query('CREATE DATABASE mon')
    influx.query('CREATE RETENTION POLICY "long" ON mon DURATION INF '
                 'REPLICATION 1')
    lines = []
    for t in TENANTS:
        for m in MEASUREMENTS:
            for day in range(weeks * 7):
                for k in range(per_day):
                    ts = NOW_MS - day * DAY_MS - k * 1000 - 5000
                    lines.append('%s,_region=r1,_tenant_id=%s,host=h%d '
                                 'value=%d,value_meta="{}" %d'
                                 % (_esc(m), t, k, day, ts))
        if future:
            lines.append('cpu.idle_perc,_region=r1,_tenant_id=%s,host=future '
                         'value=1,value_meta="{}" %d' % (t, NOW_MS + DAY_MS))
        lines.append('alarm_state_history,tenant_id=%s alarm_id="a1",'
                     'new_state="ALARM",old_state="OK",reason="x" %d'
                     % (t, NOW_MS - 3 * DAY_MS))
    lines.append('cpu.idle_perc,_region=r1,_tenant_id=%s,host=h value=1,'
                 'value_meta="{}" %d' % (_esc(HOSTILE_TENANT),
                                         NOW_MS - DAY_MS))
    influx.write('mon', lines)
    influx.write('mon', ['cpu.idle_perc,_region=r1,_tenant_id=%s,host=old '
                         'value=1,value_meta="{}" %d' % (t, NOW_MS - 30 *
                                                         DAY_MS)
                         for t in TENANTS], rp='long')


def snapshot(influx, db='mon'):
    """Series and counts of a database, per policy."""
    out = {}
    for rp in [r['name'] for r in influx.rows(
            'SHOW RETENTION POLICIES ON "%s"' % db)]:
        out[rp] = sorted(
            (r['_measurement'], tuple(sorted(r.items())))
            for r in influx.rows('SELECT count(*) FROM "%s"./.*/ GROUP BY *'
                                 % rp, db))
    out['series'] = sorted(r['key'] for r in influx.rows('SHOW SERIES', db))
    return out


def count(influx, db, measurement, where=''):
    rows = influx.rows('SELECT count(*) FROM "%s" %s' % (
        measurement.replace('\\', '\\\\').replace('"', '\\"'), where), db)
    return max((v for k, v in rows[0].items() if k.startswith('count_')),
               default=0) if rows else 0


def migrate(conf_path, *args, cwd=None, check=None, timeout=300):
    exe = os.path.join(os.path.dirname(sys.executable),
                       'monasca-persister-dbpt-migrate')
    proc = subprocess.run([exe, '--config-file', conf_path, *args],
                          capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)
    if check is not None:
        assert proc.returncode == check, proc.stdout + proc.stderr
    return proc


def test_the_seed_command_line_migrates_everything_and_verifies(
        influx, persister_conf, tmp_path):
    seed(influx)
    before = snapshot(influx)
    out = migrate(persister_conf, '--migrate-retention-policy',
                  'project:2w,project2:1d', '--migrate-skip-regex',
                  '^log\\..+', '--migrate-time-unit', 'w',
                  '--migrate-start-time-offset', '0',
                  '--migrate-end-time-offset', '520', '--verify',
                  cwd=tmp_path, check=0).stdout
    assert 'MISMATCH' not in out
    assert snapshot(influx) == before  # the source is untouched
    assert influx.databases() == {'mon'} | {'mon_' + t for t in TENANTS}
    for t in ('0f1e2d3c4b5a69788796a5b4c3d2e1f0', 'ops'):
        db = 'mon_' + t
        for m in MEASUREMENTS[:-1]:
            # 21 days x 2, the future point, the point in "long"
            extra = 2 if m == 'cpu.idle_perc' else 0
            assert count(influx, db, m) == 42 + extra, (db, m)
        assert count(influx, db, 'log.api') == 0  # skipped by the regex
        assert count(influx, db, 'alarm_state_history') == 1
        tags = {r['value'] for r in influx.rows(
            'SHOW TAG VALUES FROM "cpu.idle_perc" WITH KEY = "_tenant_id"',
            db)}
        assert tags == {t}
    # project:2w -> policy 2w, only the last two weeks copied
    policies = influx.rows('SHOW RETENTION POLICIES ON mon_project')
    assert [(p['name'], p['duration']) for p in policies if p['default']] \
        == [('2w', '336h0m0s')]
    assert count(influx, 'mon_project', 'disk used') == 28
    assert count(influx, 'mon_project2', 'disk used') == 2
    # the refused tenant is reported and left in place
    assert HOSTILE_TENANT in out and 'left in place' in out
    assert not any('evil' in db for db in influx.databases())
    assert 'migrating mon' in (tmp_path / 'migrate.log').read_text()


def test_dry_run_prints_the_plan_and_writes_nothing(influx, persister_conf,
                                                    tmp_path):
    seed(influx, weeks=1)
    out = migrate(persister_conf, '--dry-run', cwd=tmp_path, check=0).stdout
    assert 'create database "mon_project"' in out
    assert 'chunk ' in out and 'point(s) to copy' in out
    assert influx.databases() == {'mon'}
    assert not (tmp_path / 'migrate-checkpoint.jsonl').exists()


def test_the_plan_reports_tenants_over_their_series_cap_and_copies_all(
        influx, persister_conf, tmp_path):
    seed(influx, weeks=1)
    (tmp_path / 'overrides').write_text('project max_series=5\n'
                                        'ops max_series=1000\n')
    with open(persister_conf, 'a') as handle:
        handle.write('tenant_overrides_file = %s\n' % (tmp_path /
                                                         'overrides'))
    source = len(influx.rows('SHOW SERIES WHERE "_tenant_id" = \'project\' '
                             'OR "tenant_id" = \'project\'', 'mon'))
    out = migrate(persister_conf, '--verify', cwd=tmp_path, check=0).stdout
    over = [line for line in out.splitlines() if 'max_series' in line]
    assert len(over) == 1, out
    assert over[0].startswith('  over max_series: tenant project will have '
                              '%d series in "mon_project" (%d from the '
                              'source, 0 there already), max_series is 5'
                              % (source, source)), over
    assert 'MISMATCH' not in out
    assert len(influx.rows('SHOW SERIES', 'mon_project')) == source


@pytest.mark.parametrize('args, words', [
    (['--migrate-time-unit', 'x'], "--migrate-time-unit 'x'"),
    (['--migrate-retention-policy', 'project:2x'], "project: retention '2x'"),
    (['--migrate-retention-policy', 'project'], "'project' is not"),
    (['--migrate-skip-regex', '(unclosed'], "'(unclosed'"),
    (['--migrate-start-time-offset', '5', '--migrate-end-time-offset', '5'],
     'range is empty'),
    (['--migrate-end-time-offset', '-1'], 'negative'),
    (['--workers', '0'], '--workers 0'),
])
def test_bad_arguments_are_refused_before_anything_is_written(
        influx, persister_conf, tmp_path, args, words):
    seed(influx, weeks=1)
    proc = migrate(persister_conf, *args, cwd=tmp_path, check=2)
    assert words in proc.stderr
    assert influx.databases() == {'mon'}


def test_a_bare_number_is_in_the_time_unit_like_upstream(
        influx, persister_conf, tmp_path):
    seed(influx, weeks=1)
    migrate(persister_conf, '--migrate-retention-policy', 'project:2',
            '--migrate-time-unit', 'd', cwd=tmp_path, check=0)
    policies = influx.rows('SHOW RETENTION POLICIES ON mon_project')
    assert [p['name'] for p in policies if p['default']] == ['2d']


def test_rerun_copies_nothing_twice_and_counts_stay_equal(
        influx, persister_conf, tmp_path):
    seed(influx, weeks=1, future=False)
    migrate(persister_conf, cwd=tmp_path, check=0)
    first = {db: snapshot(influx, db) for db in influx.databases()}
    out = migrate(persister_conf, '--verify', cwd=tmp_path, check=0).stdout
    assert ' 0 chunk(s)' in out
    assert {db: snapshot(influx, db) for db in influx.databases()} == first
    # new points (here stamped in the future) are copied by the next run,
    # and only they: the run after that has nothing to do
    seed(influx, weeks=1, future=True)
    out = migrate(persister_conf, cwd=tmp_path, check=0).stdout
    assert ' %d chunk(s)' % len(TENANTS) in out
    first = {db: snapshot(influx, db) for db in influx.databases()}
    out = migrate(persister_conf, '--verify', cwd=tmp_path, check=0).stdout
    assert ' 0 chunk(s)' in out
    assert {db: snapshot(influx, db) for db in influx.databases()} == first
    # starting over copies everything again, and still changes nothing
    migrate(persister_conf, '--restart', '--verify', cwd=tmp_path, check=0)
    assert {db: snapshot(influx, db) for db in influx.databases()} == first


def test_delta_run_copies_only_what_arrived_meanwhile(
        influx, persister_conf, tmp_path):
    seed(influx, weeks=2, future=False)
    migrate(persister_conf, cwd=tmp_path, check=0)
    influx.write('mon', ['disk\\ used,_region=r1,_tenant_id=ops,host=new '
                         'value=1,value_meta="{}" %d' % (int(time.time() *
                                                             1000) + i)
                         for i in range(5)])
    out = migrate(persister_conf, '--verify', cwd=tmp_path, check=0).stdout
    assert ' 1 chunk(s)' in out, out
    assert count(influx, 'mon_ops', 'disk used', "WHERE host = 'new'") == 5


def test_kill_dash_nine_then_resume_skips_only_finished_chunks(
        influx, persister_conf, tmp_path):
    seed(influx, weeks=3)
    before = snapshot(influx)
    exe = os.path.join(os.path.dirname(sys.executable),
                       'monasca-persister-dbpt-migrate')
    checkpoint = tmp_path / 'migrate-checkpoint.jsonl'
    args = [exe, '--config-file', persister_conf, '--chunk-points', '2',
            '--migrate-time-unit', 'd', '--workers', '1']
    full = migrate(persister_conf, *args[3:], '--dry-run', cwd=tmp_path,
                   check=0).stdout
    total = int(full.split(' chunk(s)')[0].rsplit(' ', 1)[1])
    for _ in range(3):
        proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        lines = len(checkpoint.read_text().splitlines()) \
            if checkpoint.exists() else 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (
                not checkpoint.exists() or
                len(checkpoint.read_text().splitlines()) < lines + 20):
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    done = len(checkpoint.read_text().splitlines())
    rest = migrate(persister_conf, *args[3:], '--dry-run', cwd=tmp_path,
                   check=0).stdout
    left = int(rest.split(' chunk(s)')[0].rsplit(' ', 1)[1])
    assert 0 < left < total and done >= 60
    out = migrate(persister_conf, *args[3:], '--verify', cwd=tmp_path,
                  check=0).stdout
    assert 'MISMATCH' not in out
    assert snapshot(influx) == before


def test_verify_reports_a_missing_point_and_exits_non_zero(
        influx, persister_conf, tmp_path):
    seed(influx, weeks=1)
    migrate(persister_conf, cwd=tmp_path, check=0)
    influx.query('DELETE FROM "disk used" WHERE host = \'h0\'', 'mon_ops')
    proc = migrate(persister_conf, '--verify-only', cwd=tmp_path, check=1)
    assert 'MISMATCH disk used tenant ops in mon_ops' in proc.stdout


def test_missing_source_database_is_a_clear_error(influx, persister_conf,
                                                  tmp_path):
    proc = migrate(persister_conf, cwd=tmp_path, check=2)
    assert 'source database "mon" not found' in proc.stderr


def test_migration_and_persister_agree_on_every_placement(conf):
    import random

    from monasca_persister_dbpt.migrate import cli
    from monasca_persister_dbpt.repositories.metrics import MetricsRepository
    rnd = random.Random(1)
    conf.set_override('db_per_tenant', True, 'influxdb')
    conf.set_override('default_retention_hours', 72, 'influxdb')
    tenants = ['t%d' % i for i in range(300)] + \
        ['%032x' % rnd.getrandbits(128) for _ in range(300)]
    overrides = {t: rnd.choice(['1d', '2w', '12h', 'inf'])
                 for t in rnd.sample(tenants, 100)}
    conf.set_override('retention_overrides', overrides, 'dbpt')
    driver = MetricsRepository(conf).placements
    migration = cli._placements(conf, {})
    for tenant in tenants:
        assert driver.place(tenant) == migration.place(tenant)


def test_tenant_refused_once_is_migrated_when_the_pattern_admits_it(
        influx, persister_conf, tmp_path):
    seed(influx, weeks=1, future=False)
    influx.write('mon', ['disk\\ used,_region=r1,_tenant_id=team+a,host=h '
                         'value=%d,value_meta="{}" %d' % (i, NOW_MS - i * 1000)
                         for i in range(7)])
    out = migrate(persister_conf, cwd=tmp_path, check=0).stdout
    assert "tenant id 'team+a' does not match" in out
    with open(persister_conf, 'a') as handle:
        handle.write('tenant_id_pattern = [a-z+]+|[0-9a-f]{32}\n')
    out = migrate(persister_conf, '--verify', cwd=tmp_path, check=0).stdout
    assert count(influx, 'mon_team+a', 'disk used') == 7
    assert 'MISMATCH' not in out


def test_tenants_placed_on_another_server_are_streamed_there(
        influx, persister_conf, tmp_path):
    from tests import servers
    seed(influx, weeks=1, future=False)
    influx.write('mon', ['types,_tenant_id=ops,t=x i=7i,f=7,s="a\\"b\\\\c",'
                         'b=true %d' % (NOW_MS * 1000000 + 123)],
                 precision='ns')
    before = snapshot(influx)
    second = servers.InfluxServer(str(tmp_path / 'second')).start()
    try:
        (tmp_path / 'servers').write_text('ops two\n')
        with open(persister_conf, 'a') as handle:
            handle.write('servers = two:%s\ntenant_servers_file = %s\n'
                         'retention_tiers = 1h:1w\n'
                         % (second.url, tmp_path / 'servers'))
        out = migrate(persister_conf, '--verify', cwd=tmp_path,
                      check=0).stdout
        assert 'MISMATCH' not in out
        assert 'mon_ops' not in influx.databases()
        assert second.databases() == {'mon_ops'}
        for m in MEASUREMENTS[:-1]:
            # 7 days x 2, and the point in the second source policy
            extra = 1 if m == 'cpu.idle_perc' else 0
            assert count(second, 'mon_ops', m) == 14 + extra, m
        (row,) = second.rows('SELECT * FROM types GROUP BY *', 'mon_ops')
        assert (row['i'], row['f'], row['s'], row['b'], row['t']) == (
            7, 7.0, 'a"b\\c', True, 'x')
        ns = second.query('SELECT i FROM types', 'mon_ops', epoch='ns')
        assert ns[0]['series'][0]['values'][0][0] == NOW_MS * 1000000 + 123
        tiers = second.rows('SELECT count(value) FROM "tier_1h"./.*/',
                            'mon_ops')
        assert tiers and sum(r['count'] for r in tiers) > 0
        assert snapshot(influx) == before
    finally:
        second.close()


def test_a_target_server_that_is_down_costs_only_its_tenants(
        influx, persister_conf, tmp_path):
    from tests import servers
    seed(influx, weeks=1, future=False)
    second = servers.InfluxServer(str(tmp_path / 'second')).start()
    second.stop()
    try:
        (tmp_path / 'servers').write_text('ops two\n')
        with open(persister_conf, 'a') as handle:
            handle.write('servers = two:%s\ntenant_servers_file = %s\n'
                         % (second.url, tmp_path / 'servers'))
        proc = migrate(persister_conf, cwd=tmp_path, check=1)
        assert second.url in proc.stdout + proc.stderr
        for tenant in ('project', 'project2'):
            assert count(influx, 'mon_' + tenant, 'cpu.idle_perc') == 15
        assert 'mon_ops' not in influx.databases()
        # Back up: the next run copies what was left, and only that.
        second.start()
        out = migrate(persister_conf, '--verify', cwd=tmp_path,
                      check=0).stdout
        assert 'MISMATCH' not in out
        assert count(second, 'mon_ops', 'cpu.idle_perc') == 15
    finally:
        second.close()
