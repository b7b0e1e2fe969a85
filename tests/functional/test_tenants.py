"""``monasca-persister-dbpt-tenants`` against real influxd (and the real
persister for the block and the run-time retention): what it reports is
what influxd holds, an export gives back every point with its type, a drop
leaves no copy and stays dropped."""

import datetime
import gzip
import json
import os
import subprocess
import sys

import pytest
from oslo_config import cfg

from monasca_persister_dbpt import conf as dbpt_conf
from monasca_persister_dbpt.influx.writer import InfluxWriter
from monasca_persister_dbpt.placement import PlacementMap
from tests import records
from tests import servers
from tests.functional.test_limits import _totals
from tests.functional.test_persister_end_to_end import persister  # noqa: F401
from tests.functional.test_persister_end_to_end import topics  # noqa: F401
from tests.functional.test_persister_end_to_end import wait_until

TENANTS = os.path.join(os.path.dirname(sys.executable),
                       'monasca-persister-dbpt-tenants')
DAY_NS = 86400 * 10 ** 9
#: Two points a week apart (two shards), far enough back for no CQ to
#: touch them.
OLD_NS = (1700000000 // 604800) * 604800 * 10 ** 9
HOSTILE_LINES = [
    # measurement, tags and fields that need escaping; every field type.
    r'cpu\ load\,x,host=a\ b,role=x\=y value=0.30000000000000004,'
    r'n=9223372036854775807i,ok=true,note="say \"hi\" \\ there" %d',
    'cpu\\ load\\,x,host=c value=-1.5e-300,n=-3i,ok=false,note="" %d',
    'mem value=42.0,value_meta="{\\"unit\\": \\"B\\"}" %d',
]


def _config(tmp_path, influx, two, overrides, extra=''):
    path = tmp_path / 'persister.conf'
    path.write_text(
        '[influxdb]\nip_address = %s\nport = %d\ndb_per_tenant = True\n'
        'database_name = mon\n\n[dbpt]\nservers = two:%s\n'
        'tenant_overrides_file = %s\nretry_timeout = 3\nhold_after = 1\n%s\n' % (
            influx.host, influx.port, two.url, overrides, extra))
    return str(path)


def _run(config, *argv, stdin=None):
    return subprocess.run([TENANTS, '--config-file', config] + list(argv),
                          capture_output=True, text=True, input=stdin,
                          timeout=300)


def _seed(config, tenant, lines, policy=None):
    """Write through the package's own writer: the database made as the
    persister makes it (policies, tiers), on the tenant's placement."""
    conf = cfg.ConfigOpts()
    dbpt_conf.register_opts(conf)
    conf([], default_config_files=[config])
    placement = PlacementMap.from_conf(conf).place(tenant)
    writer = InfluxWriter(retry_timeout=10)
    for copy in placement.copies:
        writer.write(copy, lines, precision='ns', policy=policy)
    writer.close()


def _points(server, db):
    """Every point of every policy, with its field types: what a round
    trip must give back exactly."""
    out = {}
    for row in server.rows('SHOW RETENTION POLICIES', db):
        rp = row['name']
        for series in server.query('SELECT * FROM "%s"./.*/ GROUP BY *' % rp,
                                   db, epoch='ns')[0].get('series', []):
            for values in series['values']:
                out.setdefault((rp, series['name']), []).append(
                    (json.dumps(series.get('tags'), sort_keys=True),
                     json.dumps(values)))
        for row2 in server.rows('SHOW FIELD KEYS FROM "%s"./.*/' % rp, db):
            out.setdefault(('types', rp, row2['_measurement']), []).append(
                (row2['fieldKey'], row2['fieldType']))
    return {k: sorted(v) for k, v in out.items()}


@pytest.fixture
def estate(influx, two, tmp_path):
    """Three tenants over two servers: 'plain' on the default, 'pinned' on
    two with a leftover copy on the default (a move not yet dropped),
    'tiered' with a tier; the shared database and a foreign one beside."""
    overrides = tmp_path / 'overrides'
    overrides.write_text('pinned two\ntiered tiers=1h:inf\n')
    config = _config(tmp_path, influx, two, overrides)
    lines = [line % (OLD_NS + i * 7 * DAY_NS + n)
             for n, line in enumerate(HOSTILE_LINES) for i in range(2)]
    for tenant in ('plain', 'pinned', 'tiered'):
        _seed(config, tenant, lines)
    _seed(config, 'tiered', ['cpu,host=a value=2.5,min=1.0,max=4.0,count=3i,'
                             'sum=7.5 %d' % OLD_NS], policy='tier_1h')
    influx.query('CREATE DATABASE "mon_pinned"')
    influx.write('mon_pinned', ['leftover value=1 %d' % OLD_NS], 'ns')
    for db in ('mon', 'other'):
        influx.query('CREATE DATABASE "%s"' % db)
        influx.write(db, ['cpu,_tenant_id=plain value=1 %d' % OLD_NS], 'ns')
    return config, overrides


def _stats(server, db):
    series = sum(r['numSeries'] for r in server.rows(
        "SHOW STATS FOR 'database'") if r.get('database') == db)
    disk = sum(r['diskBytes'] for r in server.rows(
        "SHOW STATS FOR 'shard'") if r.get('database') == db)
    return series, disk


def test_list_and_show_report_what_influxd_holds(influx, two, estate):
    config, _ = estate
    result = _run(config, 'list', '-f', 'json')
    assert result.returncode == 0, result.stderr
    rows = {r['Tenant']: r for r in json.loads(result.stdout)}
    assert set(rows) == {'plain', 'pinned', 'tiered'}  # never mon, other
    assert (rows['pinned']['Server'], rows['pinned']['Other copies']) == \
        ('two', 'default')
    assert (rows['plain']['Server'], rows['plain']['Other copies']) == \
        ('default', '')
    assert 'tier_1h:0s' in rows['tiered']['Policies']
    assert 'autogen:0s*' in rows['tiered']['Policies']
    newest = OLD_NS + 7 * DAY_NS + len(HOSTILE_LINES) - 1
    for tenant, server in (('plain', influx), ('pinned', two)):
        row = rows[tenant]
        db = 'mon_' + tenant
        assert row['Series'] == len(server.rows('SHOW SERIES', db)) == 3
        assert (row['Series'], row['Disk bytes']) == _stats(server, db)
        assert row['Disk bytes'] > 0
        assert row['Newest point'] == datetime.datetime.fromtimestamp(
            newest // 10 ** 9, datetime.timezone.utc).strftime(
                '%Y-%m-%dT%H:%M:%SZ')
    shown = _run(config, 'show', 'pinned', '-f', 'json')
    assert shown.returncode == 0, shown.stderr
    show = json.loads(shown.stdout)
    assert show['Placement'] == 'two (pinned)'
    assert show['Measurements'].split('\n') == ['cpu load,x', 'leftover',
                                                'mem']
    assert 'leftover' in show['Copies'] and two.url in show['Copies']
    missing = _run(config, 'show', 'nobody')
    assert missing.returncode == 1
    assert 'tenant nobody has no database (mon_nobody)' in missing.stderr


def test_export_drop_import_gives_back_every_point_with_its_type(
        influx, two, estate, tmp_path):
    config, overrides = estate
    before = {'pinned': _points(two, 'mon_pinned'),
              'tiered': _points(influx, 'mon_tiered')}
    assert ('tier_1h', 'cpu') in before['tiered']
    assert before['pinned'][('types', 'autogen', 'cpu load,x')] == [
        ('n', 'integer'), ('note', 'string'), ('ok', 'boolean'),
        ('value', 'float')]
    assert len(before['pinned'][('autogen', 'cpu load,x')]) == 4
    for tenant in ('pinned', 'tiered'):
        out = tmp_path / (tenant + '.gz')
        dropped = _run(config, 'drop', tenant, '--yes', '--export', str(out),
                       '--settle-seconds', '0')
        assert dropped.returncode == 0, dropped.stderr
        assert 'mon_%s' % tenant not in influx.databases() | two.databases()
        assert [line for line in overrides.read_text().splitlines()
                if line.startswith(tenant + ' ')][0].endswith(
                    ' blocked=true')
        with gzip.open(out, 'rt') as handle:
            text = handle.read()
        assert text.startswith('# monasca-persister-dbpt export 1 ')
        imported = _run(config, 'import', str(out))
        assert imported.returncode == 0, imported.stderr
        assert 'verified' in imported.stdout
        assert 'is blocked' in imported.stdout
    # Back on its placement only (the leftover is not brought back).
    assert _points(two, 'mon_pinned') == before['pinned']
    assert 'mon_pinned' not in influx.databases()
    assert _points(influx, 'mon_tiered') == before['tiered']
    assert {'plain', 'mon', 'other'} <= {d.replace('mon_', '') if d !=
                                         'mon' else d
                                         for d in influx.databases()}


def test_a_bad_export_file_imports_nothing(influx, two, estate, tmp_path):
    config, _ = estate
    out = tmp_path / 'plain.gz'
    exported = _run(config, 'export', 'plain', '--out', str(out), '--start',
                    '2000-01-01', '--end', '2100-01-01T00:00:00Z')
    assert exported.returncode == 0, exported.stderr
    assert 'exported 6 point(s)' in exported.stdout
    influx.query('DROP DATABASE "mon_plain"')
    data = out.read_bytes()
    cut = tmp_path / 'cut.gz'
    cut.write_bytes(data[:-12])  # the gzip trailer and a little more
    result = _run(config, 'import', str(cut))
    assert result.returncode == 2
    assert 'nothing imported' in result.stderr
    assert 'mon_plain' not in influx.databases()


def test_orphans_lists_exactly_the_missing_projects_and_drops_them(
        influx, two, estate):
    config, _ = estate
    listed = _run(config, 'orphans', '--projects', '-', '-f', 'value', '-c',
                  'Tenant', '-c', 'Server', stdin='plain\n')
    assert listed.returncode == 0, listed.stderr
    assert sorted(listed.stdout.split('\n')) == ['', 'pinned two',
                                                 'tiered default']
    refused = _run(config, 'orphans', '--projects', '-', '--drop',
                   stdin='plain\n')
    assert refused.returncode == 2 and 'add --yes' in refused.stderr
    assert 'mon_tiered' in influx.databases()
    dropped = _run(config, 'orphans', '--projects', '-', '--drop', '--yes',
                   '--no-block', stdin='plain\n')
    assert dropped.returncode == 0, dropped.stderr
    assert influx.databases() == {'mon_plain', 'mon', 'other'}
    assert two.databases() == set()


def test_a_server_that_does_not_answer_is_named_and_nothing_is_dropped(
        influx, two, estate, tmp_path):
    config, overrides = estate
    dead = servers.free_port()
    with open(config, 'a') as handle:
        handle.write('[dbpt]\nservers = two:%s,dead:http://127.0.0.1:%d\n'
                     % (two.url, dead))
    listed = _run(config, 'list', '-f', 'value', '-c', 'Tenant')
    assert listed.returncode == 1
    assert 'dead (http://127.0.0.1:%d)' % dead in listed.stderr
    assert sorted(listed.stdout.split()) == ['pinned', 'plain', 'tiered']
    drop = _run(config, 'drop', 'plain', '--yes', '--settle-seconds', '0')
    assert drop.returncode == 1 and 'nothing changed' in drop.stderr
    assert 'mon_plain' in influx.databases()
    assert 'plain blocked' not in overrides.read_text()


def _policy(influx, db):
    return {r['name']: r['duration'] for r in influx.rows(
        'SHOW RETENTION POLICIES', db) if r['default']}


def test_retention_edits_and_a_block_reach_the_running_persister(
        influx, broker, topics, persister, tmp_path):  # noqa: F811
    """The overrides file read at run time: a retention change reconciled,
    a bad edit refused while the other tenants go on, a dropped tenant's
    late record refused and counted, its database not made again."""
    overrides = tmp_path / 'overrides'
    overrides.write_text('keep max_series=0\n')
    config = tmp_path / 'tenants.conf'
    config.write_text('[influxdb]\nip_address = %s\nport = %d\n'
                      'db_per_tenant = True\n[dbpt]\n'
                      'tenant_overrides_file = %s\n'
                      % (influx.host, influx.port, overrides))
    proc = persister(batch_size=20, max_wait=1, extra=(
        'tenant_overrides_file = %s\nmax_delay = 0' % overrides))
    now = int(datetime.datetime.now().timestamp() * 1000)
    sent = {'keep': 0}

    def feed(*tenants, key=b'k'):
        producer = broker.producer()
        for tenant in tenants:
            producer.produce(topics['metrics_topic'], records.encode(
                records.metric(tenant, timestamp=now + sent.get(tenant, 0),
                               value=sent.get(tenant, 0))), key=key)
            sent[tenant] = sent.get(tenant, 0) + 1
        assert producer.flush(30) == 0

    def written(tenant):
        if 'mon_' + tenant not in influx.databases():
            return 0
        rows = influx.rows('SELECT count(value) FROM "cpu.idle_perc"',
                           'mon_' + tenant)
        return rows[0]['count'] if rows else 0

    def changes():
        return proc.logtext().count('tenant overrides file %s changed'
                                    % overrides)

    feed('keep', 'gone', 'r')
    assert wait_until(lambda: all(written(t) == 1 for t in
                                  ('keep', 'gone', 'r')), 60), \
        proc.logtext()[-3000:]
    assert _policy(influx, 'mon_r') == {'autogen': '0s'}
    overrides.write_text('keep max_series=0\nr retention=2w\n')
    assert wait_until(lambda: feed('keep', 'r') or
                      _policy(influx, 'mon_r') == {'autogen': '336h0m0s'},
                      90), proc.logtext()[-3000:]
    # A tier kept shorter than the raw policy: refused, the last good file
    # kept, every tenant still written.
    seen = changes()
    overrides.write_text('keep max_series=0\nr retention=2w tiers=1h:1d\n')
    assert wait_until(lambda: feed('keep') or 'tier 1h is kept 24h, '
                      'shorter than the raw policy 336h' in proc.logtext(),
                      90), proc.logtext()[-3000:]
    assert changes() == seen
    overrides.write_text('keep max_series=0\nr retention=2w\n')
    feed('keep', 'r')
    assert wait_until(lambda: written('keep') == sent['keep'] and
                      written('r') == sent['r'], 60)
    assert _policy(influx, 'mon_r') == {'autogen': '336h0m0s'}
    # The drop blocks 'gone' in the same file; once the persister has read
    # it, a late record of 'gone' is refused and counted.
    dropped = subprocess.run([TENANTS, '--config-file', str(config), 'drop',
                              'gone', '--yes', '--settle-seconds', '0'],
                             capture_output=True, text=True, timeout=120)
    assert dropped.returncode == 0, dropped.stderr
    assert 'mon_gone' not in influx.databases()
    seen = changes()
    assert wait_until(lambda: feed('keep') or changes() > seen, 90), \
        proc.logtext()[-3000:]
    feed('gone', 'keep')  # one partition: 'gone' is handled first
    assert wait_until(lambda: written('keep') == sent['keep'], 60)
    assert wait_until(lambda: _totals(proc.dir, 'gone').get(
        'refused_blocked') == 1, 30), proc.logtext()[-3000:]
    assert 'mon_gone' not in influx.databases()
    assert written('r') == sent['r']
    assert proc.alive()
