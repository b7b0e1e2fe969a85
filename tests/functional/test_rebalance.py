"""``--rebalance`` on real influxd: a server is added to the hash, every
tenant database the new placement moves is streamed there (raw points,
alarm history and tiers), verified, and only then dropped."""

import time

import pytest

from monasca_persister_dbpt.migrate import cli
from monasca_persister_dbpt.placement import PlacementMap, Server
from monasca_persister_dbpt.placement import moves
from monasca_persister_dbpt.repositories.alarm_state_history import \
    AlarmStateHistoryRepository
from monasca_persister_dbpt.repositories.metrics import MetricsRepository
from tests import records
from tests import servers

NOW_S = int(time.time()) // 600 * 600
TENANTS = ['proj-%02d' % i for i in range(24)]
#: Points per tenant: 3 hosts x 40 raw points, 2 alarm transitions, and
#: 6 tier points older than the raw policy keeps.
RAW, ALARMS, TIER = 120, 2, 6


@pytest.fixture
def two(tmp_path):
    server = servers.InfluxServer(str(tmp_path / 'two')).start()
    yield server
    server.close()


@pytest.fixture
def three(tmp_path):
    server = servers.InfluxServer(str(tmp_path / 'three')).start()
    yield server
    server.close()


def _config(path, influx, named, hash_names, log):
    path.write_text(
        '[DEFAULT]\nlog_file = %s\n\n[influxdb]\ndatabase_name = mon\n'
        'db_per_tenant = True\nip_address = %s\nport = %d\n'
        'default_retention_hours = 24\n\n[dbpt]\nretry_timeout = 10\n'
        'retention_tiers = 1h:8w\nservers = %s\nhash_servers = %s\n'
        % (log, influx.host, influx.port,
           ','.join('%s:%s' % kv for kv in named.items()),
           ','.join(hash_names)))
    return str(path)


def _write_history(influx_conf, named, hash_names):
    influx_conf.set_override('servers', named, 'dbpt')
    influx_conf.set_override('hash_servers', hash_names, 'dbpt')
    influx_conf.set_override('default_retention_hours', 24, 'influxdb')
    influx_conf.set_override('retention_tiers', ['1h:8w'], 'dbpt')
    metrics = MetricsRepository(influx_conf)
    records.feed(metrics, [
        records.metric(t, dimensions={'hostname': 'h%d' % h},
                       timestamp=(NOW_S - 3600 + i * 60) * 1000,
                       value=float(i) if h else i)  # ints and floats
        for t in TENANTS for h in range(3) for i in range(40)])
    alarms = AlarmStateHistoryRepository(influx_conf)
    records.feed(alarms, [records.alarm(t, timestamp=(NOW_S - 600 + i) * 1000)
                          for t in TENANTS for i in range(ALARMS)])
    placements = metrics.placements
    for tenant in TENANTS:
        p = placements.place(tenant)
        tier = p.tiers[0].policy.name
        lines = ['cpu.idle_perc,_region=RegionOne,_tenant_id=%s,hostname=h0 '
                 'value=%d,min=1,max=9,count=%di,sum=%d %d' % (
                     tenant, i, 10 + i, 5 * i,
                     (NOW_S - 86400 * (2 + i)) * 10 ** 9)
                 for i in range(TIER)]
        server = Server(p.server.host, p.server.port)
        _post(server, p.database, lines, tier)
    # oslo.config shares a registered group's options between ConfigOpts:
    # an override left here would reach the command's own config.
    influx_conf.reset()
    for name in ('servers', 'hash_servers', 'retention_tiers'):
        influx_conf.clear_override(name, 'dbpt')
    influx_conf.clear_override('default_retention_hours', 'influxdb')
    return placements


def _post(server, database, lines, rp):
    import requests
    response = requests.post(server.url + '/write', params={
        'db': database, 'rp': rp, 'precision': 'ns'},
        data='\n'.join(lines).encode(), timeout=30)
    assert response.status_code == 204, response.text


def _count(server, database, what, rp=''):
    rows = server.rows('SELECT count(%s) FROM %s"%s"' % (
        'value' if what != 'alarm_state_history' else 'new_state',
        '"%s".' % rp if rp else '', what), database)
    return rows[0]['count'] if rows else 0


def _holders(by_url, tenant):
    return sorted(url for url, s in by_url.items()
                  if 'mon_' + tenant in s.databases())


def test_rebalance_moves_whole_histories_and_drops_only_verified_copies(
        influx_conf, influx, two, three, tmp_path, capsys):
    before = _write_history(influx_conf, {'two': two.url},
                            ['default', 'two'])
    by_url = {s.url: s for s in (influx, two, three)}
    config = _config(tmp_path / 'persister.conf', influx,
                     {'two': two.url, 'three': three.url},
                     ['default', 'two', 'three'], tmp_path / 'm.log')
    after = PlacementMap(database_name='mon', server=Server(
        influx.host, influx.port), servers={
        'two': Server(two.host, two.port),
        'three': Server(three.host, three.port)},
        hash_servers=['default', 'two', 'three'])
    moved = [t for t in TENANTS if after.place(t).server.url !=
             before.place(t).server.url]
    # Rendezvous: only moves to the new server.
    assert moved and all(after.place(t).server.url == three.url
                         for t in moved)
    # One moved database also holds another tenant's point: that move is
    # not verified, so its source must stay.
    foreign, other = moved[0], TENANTS[-1]
    source = by_url[before.place(foreign).server.url]
    source.write('mon_' + foreign, 'cpu.idle_perc,_region=RegionOne,'
                 '_tenant_id=%s,hostname=x value=1 %d' % (other, NOW_S * 1000))

    argv = ['--config-file', config, '--rebalance', '--drop-source',
            '--settle-seconds', '0', '--checkpoint',
            str(tmp_path / 'rb.jsonl'), '--workers', '4']
    assert cli.main(argv) == 1
    out = capsys.readouterr().out
    assert 'failed tenant %s' % foreign in out
    assert "points of tenant '%s'" % other in out
    assert _holders(by_url, foreign) == [source.url]  # nothing copied

    for tenant in TENANTS:
        if tenant == foreign:
            continue
        home = by_url[after.place(tenant).server.url]
        assert _holders(by_url, tenant) == [home.url], tenant
        db = 'mon_' + tenant
        assert _count(home, db, 'cpu.idle_perc') == RAW, tenant
        assert _count(home, db, 'alarm_state_history') == ALARMS, tenant
        assert _count(home, db, 'cpu.idle_perc', 'tier_1h') >= TIER, tenant
        old_tier = [r for r in home.rows(
            'SELECT "count", "sum" FROM "tier_1h"."cpu.idle_perc" WHERE '
            'time < %ds' % (NOW_S - 86400), db)]
        assert len(old_tier) == TIER, tenant
        # Types survive the stream: integers stay integers.
        kinds = {r['fieldKey']: r['fieldType'] for r in home.rows(
            'SHOW FIELD KEYS FROM "tier_1h"."cpu.idle_perc"', db)}
        assert kinds['count'] == 'integer', kinds
    markers = moves.parse_markers(three.query(
        moves.SELECT_MARKERS, moves.DATABASE)[0])
    states = {m.tenant_id: m.state for m in markers}
    assert states[foreign] == moves.COPYING
    assert all(states[t] == moves.VERIFIED for t in moved if t != foreign)

    # Take the stray point away: the next run finishes the last move, and
    # a run after that finds nothing to do.
    source.query('DELETE FROM "cpu.idle_perc" WHERE _tenant_id = \'%s\''
                 % other, 'mon_' + foreign)
    assert cli.main(argv) == 0, capsys.readouterr().out
    assert _holders(by_url, foreign) == [three.url]
    assert _count(three, 'mon_' + foreign, 'cpu.idle_perc') == RAW
    assert cli.main(argv) == 0
    assert '0 tenant database(s)' in capsys.readouterr().out


def test_rebalance_dry_run_lists_the_moves_and_changes_nothing(
        influx_conf, influx, two, three, tmp_path, capsys):
    _write_history(influx_conf, {'two': two.url}, ['default', 'two'])
    config = _config(tmp_path / 'persister.conf', influx,
                     {'two': two.url, 'three': three.url},
                     ['default', 'two', 'three'], tmp_path / 'm.log')
    held = {s.url: s.databases() for s in (influx, two, three)}
    assert cli.main(['--config-file', config, '--rebalance', '--dry-run',
                     '--checkpoint', str(tmp_path / 'rb.jsonl')]) == 0
    out = capsys.readouterr().out
    assert 'move tenant proj-' in out and '-> %s' % three.url in out
    assert {s.url: s.databases() for s in (influx, two, three)} == held


@pytest.mark.parametrize('argv, message', [
    (['--drop-source'], '--drop-source needs --rebalance'),
    (['--rebalance', '--no-verify'], '--rebalance always verifies'),
    (['--rebalance', '--settle-seconds', '-1'], '--settle-seconds -1'),
])
def test_rebalance_refuses_bad_flags_naming_them(persister_conf, argv,
                                                 message, capsys):
    assert cli.main(['--config-file', persister_conf] + argv) == 2
    assert message in capsys.readouterr().err
