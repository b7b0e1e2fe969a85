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
    # Raw points five hours old: older than the tier query recomputes
    # (RESAMPLE ... FOR two hours), so that it cannot add points to a
    # source while a move counts it (it runs once, at some moment, when
    # the database is made).
    records.feed(metrics, [
        records.metric(t, dimensions={'hostname': 'h%d' % h},
                       timestamp=(NOW_S - 5 * 3600 + i * 60) * 1000,
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


def test_a_new_server_that_is_down_costs_only_the_moves_to_it(
        influx_conf, influx, two, three, tmp_path, capsys):
    before = _write_history(influx_conf, {'two': two.url},
                            ['default', 'two'])
    by_url = {s.url: s for s in (influx, two, three)}
    down = 'http://127.0.0.1:%d' % servers.free_port()
    # The hash adds a server that does not answer; one tenant is moved to
    # a live one by the overrides file.
    pinned = TENANTS[0]
    overrides = tmp_path / 'overrides'
    overrides.write_text('%s three\n' % pinned)
    config = _config(tmp_path / 'persister.conf', influx,
                     {'two': two.url, 'three': three.url, 'down': down},
                     ['default', 'two', 'down'], tmp_path / 'm.log')
    with open(config, 'a') as handle:
        handle.write('tenant_overrides_file = %s\nretry_timeout = 2\n'
                     'hold_after = 1\n'
                     % overrides)
    assert cli.main(['--config-file', config, '--rebalance',
                     '--drop-source', '--settle-seconds', '0',
                     '--checkpoint', str(tmp_path / 'rb.jsonl')]) == 1
    out = capsys.readouterr().out
    assert 'cannot look for tenant databases on %s' % down in out
    assert 'not started' in out and '-> %s' % down in out
    # The move to the live server went through; the others stayed put.
    assert _holders(by_url, pinned) == [three.url]
    assert _count(three, 'mon_' + pinned, 'cpu.idle_perc') == RAW
    for tenant in TENANTS[1:]:
        assert _holders(by_url, tenant) == [before.place(tenant).server.url]


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
    (['--repair', '--rebalance'], '--repair copies, verifies and clears'),
    (['--repair', '--verify-only'], '--repair copies, verifies and clears'),
])
def test_rebalance_refuses_bad_flags_naming_them(persister_conf, argv,
                                                 message, capsys):
    assert cli.main(['--config-file', persister_conf] + argv) == 2
    assert message in capsys.readouterr().err


# -- with the real persister and monasca-api's reader -----------------------

LIVE_TENANTS = ['live-%02d' % i for i in range(12)]
HISTORY = 120          # points per tenant, all older than the live ones
HISTORY_FROM = (NOW_S - 7200) * 1000


@pytest.fixture
def topics(broker):
    import uuid
    suffix = uuid.uuid4().hex[:8]
    names = {'metrics_topic': 'metrics_' + suffix,
             'alarms_topic': 'alarms_' + suffix, 'group': 'g' + suffix}
    for name in (names['metrics_topic'], names['alarms_topic']):
        broker.create_topic(name)
    live = 'live_' + suffix
    broker.create_topic(live)
    return names, live


def _produce(broker, topic, recs):
    producer = broker.producer()
    for i, rec in enumerate(recs):
        producer.produce(topic, records.encode(rec), key=str(i % 8).encode())
    assert producer.flush(30) == 0


def _wait(check, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    assert check(), what


def _tenant_points(by_url, tenant):
    """{server url: points of the tenant there}."""
    out = {}
    for url, server in by_url.items():
        if 'mon_' + tenant in server.databases():
            rows = server.rows('SELECT count(value) FROM "cpu.idle_perc"',
                               'mon_' + tenant)
            out[url] = rows[0]['count'] if rows else 0
    return out


def _reader(tmp_path, influx, named, hash_names):
    api_conf = pytest.importorskip('monasca_api.conf')
    from oslo_config import cfg
    path = tmp_path / 'monasca-api.conf'
    path.write_text(
        '[influxdb]\nip_address = %s\nport = %d\nuser = monasca-api\n'
        'password = x\ndb_per_tenant = True\ndatabase_name = mon\n\n'
        '[repositories]\nmetrics_driver = monasca_persister_dbpt.api.'
        'metrics_repository:MetricsRepository\n\n'
        '[dbpt]\nservers = %s\nhash_servers = %s\n' % (
            influx.host, influx.port,
            ','.join('%s:%s' % kv for kv in named.items()),
            ','.join(hash_names)))
    api_conf.register_opts()
    cfg.CONF(['--config-file', str(path)], project='monasca-api',
             default_config_files=[])
    from monasca_common.simport import simport
    repo = simport.load(cfg.CONF.repositories.metrics_driver)()
    repo.moves._every = 0.5  # the test's settle time is 2 s
    return repo


def _history_complete(repo, tenant):
    """What monasca-api returns for the tenant's history: every point."""
    (listed,) = repo.measurement_list(
        tenant, 'RegionOne', 'cpu.idle_perc', {'hostname': 'old'},
        HISTORY_FROM / 1000 - 1, HISTORY_FROM / 1000 + HISTORY, None, 10000,
        False, None) or [{'measurements': []}]
    values = [m[1] for m in listed['measurements']]
    (stats,) = repo.metrics_statistics(
        tenant, 'RegionOne', 'cpu.idle_perc', {'hostname': 'old'},
        HISTORY_FROM / 1000 - 1, HISTORY_FROM / 1000 + HISTORY,
        ['count', 'sum'], 60, None, 1000, False, None) or \
        [{'statistics': []}]
    count = sum(s[1] for s in stats['statistics'])
    total = sum(s[2] for s in stats['statistics'])
    names = {m['name'] for m in repo.list_metrics(
        tenant, 'RegionOne', None, {'hostname': 'old'}, None, 100)}
    return (values == [float(i) for i in range(HISTORY)] and
            count == HISTORY and total == sum(range(HISTORY)) and
            names == {'cpu.idle_perc'},
            (len(values), count, total, names))


def test_rebalance_while_the_persister_writes_keeps_reads_complete(
        influx, two, three, broker, topics, tmp_path):
    from oslo_config import cfg
    topics, live = topics
    by_url = {s.url: s for s in (influx, two, three)}
    old = {'two': two.url}
    new = {'two': two.url, 'three': three.url}

    def persister(named, hash_names, name, **settings):
        extra = 'servers = %s\nhash_servers = %s' % (
            ','.join('%s:%s' % kv for kv in named.items()),
            ','.join(hash_names))
        return servers.Persister(influx, broker, str(tmp_path / name),
                                 extra=extra, **{**topics, **settings}
                                 ).start()
    first = persister(old, ['default', 'two'], 'p1')
    try:
        _produce(broker, topics['metrics_topic'], [
            records.metric(t, dimensions={'hostname': 'old'},
                           timestamp=HISTORY_FROM + i * 1000, value=i)
            for t in LIVE_TENANTS for i in range(HISTORY)])
        _wait(lambda: all(sum(_tenant_points(by_url, t).values()) == HISTORY
                          for t in LIVE_TENANTS), 90,
              'history written: %s' % first.logtext()[-1500:])
        # Add the third server: only the map changes. (The live records
        # come on a topic of their own, so that the history is known to be
        # on the old servers alone, whatever offsets the first persister
        # committed.)
        first.stop()
        second = persister(new, ['default', 'two', 'three'], 'p2',
                           metrics_topic=live)
        start = int(time.time() * 1000) - 600_000
        with records.Feeder(broker, live, LIVE_TENANTS, lambda tenant, i:
                            records.metric(tenant,
                                           dimensions={'hostname': 'live'},
                                           timestamp=start + i, value=i),
                            per_tick=12, pause=0.05) as feeder:
            try:
                _wait(lambda: three.databases(), 60,
                      'the new server gets its tenants: %s'
                      % second.logtext()[-1500:])
                repo = _reader(tmp_path, influx, new,
                               ['default', 'two', 'three'])
                try:
                    moved = [t for t in LIVE_TENANTS
                             if repo.placements.place(t).server.url ==
                             three.url]
                    assert moved
                    # Before the rebalance: the old copy and the new one
                    # are read together.
                    for tenant in LIVE_TENANTS:
                        ok, seen = _history_complete(repo, tenant)
                        assert ok, (tenant, seen)
                    config = _config(tmp_path / 'persister.conf', influx,
                                     new, ['default', 'two', 'three'],
                                     tmp_path / 'm.log')
                    import threading
                    result = {}
                    run = threading.Thread(target=lambda: result.update(
                        rc=cli.main(['--config-file', config, '--rebalance',
                                     '--drop-source', '--settle-seconds',
                                     '2', '--checkpoint',
                                     str(tmp_path / 'rb.jsonl')])))
                    run.start()
                    reads = 0
                    while run.is_alive():   # during the move
                        for tenant in moved:
                            ok, seen = _history_complete(repo, tenant)
                            assert ok, (tenant, seen)
                            reads += 1
                    run.join()
                    assert result['rc'] == 0
                    assert reads >= len(moved)
                    for tenant in LIVE_TENANTS:     # after
                        ok, seen = _history_complete(repo, tenant)
                        assert ok, (tenant, seen)
                finally:
                    cfg.CONF.reset()
                    cfg.CONF.clear()
            finally:
                pass
        placements = PlacementMap(
            database_name='mon', server=Server(influx.host, influx.port),
            servers={name: Server(s.host, s.port) for name, s in
                     (('two', two), ('three', three))},
            hash_servers=['default', 'two', 'three'])

        def settled():
            return all(_tenant_points(by_url, t) == {
                placements.place(t).server.url: HISTORY + feeder.sent[t]}
                for t in LIVE_TENANTS)
        _wait(settled, 90, 'every history once, on its server: %s' % {
            t: (_tenant_points(by_url, t), HISTORY + feeder.sent[t])
            for t in LIVE_TENANTS})
    finally:
        first.stop()
        if 'second' in locals():
            second.stop()
