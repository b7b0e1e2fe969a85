"""monasca-api 11.0.0's own repository code, through our read driver, reads
exactly what our drivers wrote: two real influxd, a non-default template, a
tier, per-tenant isolation."""

import time

import pytest
from oslo_config import cfg

from monasca_persister_dbpt.repositories.alarm_state_history import \
    AlarmStateHistoryRepository
from monasca_persister_dbpt.repositories.metrics import MetricsRepository
from tests import records

api_conf = pytest.importorskip('monasca_api.conf')
from monasca_persister_dbpt.api import metrics_repository  # noqa: E402

NOW_S = int(time.time()) // 600 * 600 - 600  # a whole 10 minutes back
REGION = 'RegionOne'
TEMPLATE = 't-{tenant_id}-{database_name}'
#: tenant -> server name; tb lives on the second server.
TENANTS = {'ta': 'default', 'tb': 'two', 'tc': 'default'}


def _alarm(tenant, i):
    rec = records.alarm(tenant, alarm_id='%s-alarm' % tenant,
                        timestamp=(NOW_S - 60 + i) * 1000,
                        new_state='ALARM' if i % 2 == 0 else 'OK')
    sub = rec['alarm-transitioned']['subAlarms'][0]
    expression = sub['subAlarmExpression']
    expression['metricDefinition'] = {
        'name': expression.pop('metricName'),
        'dimensions': expression.pop('dimensions')}
    return rec


def _metrics(tenant):
    """Two names x three hosts, a point every 30 s for 30 minutes."""
    out = []
    for name in ('cpu.idle_perc', 'mem.free_mb'):
        for host in range(3):
            for i in range(60):
                out.append(records.metric(
                    tenant, name=name, region=REGION,
                    dimensions={'hostname': '%s-h%d' % (tenant, host),
                                'service': 'monitoring'},
                    timestamp=(NOW_S - 1800 + i * 30) * 1000,
                    value=float(host * 100 + i),
                    value_meta={'n': str(i)} if i == 0 else None))
    return out


@pytest.fixture
def written(influx_conf, influx, two, tmp_path):
    overrides = tmp_path / 'overrides'
    overrides.write_text('tb two\n')
    settings = {'database_template': TEMPLATE,
                'servers': {'two': two.url},
                'tenant_overrides_file': str(overrides),
                'retention_tiers': ['10m:1w']}
    for name, value in settings.items():
        influx_conf.set_override(name, value, 'dbpt')
    influx_conf.set_override('default_retention_hours', 24, 'influxdb')
    sent = {t: _metrics(t) for t in TENANTS}
    metrics = MetricsRepository(influx_conf)
    records.feed(metrics, [r for recs in sent.values() for r in recs])
    alarms = AlarmStateHistoryRepository(influx_conf)
    records.feed(alarms, [_alarm(t, i) for t in TENANTS for i in range(4)])
    # A tier is filled by its continuous query as time passes; here by the
    # same statement over the span (what the migration does).
    from monasca_persister_dbpt.influx.influxql import downsample
    for tenant, where in TENANTS.items():
        placement = metrics.placements.place(tenant)
        server = influx if where == 'default' else two
        tier = placement.tiers[0]
        server.query('%s WHERE time >= %ds AND time < %ds GROUP BY time(10m),'
                     ' *' % (downsample(placement.database, tier),
                             NOW_S - 3600, NOW_S + 600),
                     placement.database)
    return sent, settings, overrides


@pytest.fixture
def api(written, influx, tmp_path):
    """monasca-api's configuration, as an operator writes monasca-api.conf."""
    _, settings, overrides = written
    path = tmp_path / 'monasca-api.conf'
    path.write_text(
        '[influxdb]\nip_address = %s\nport = %d\nuser = monasca-api\n'
        'password = x\ndb_per_tenant = True\ndatabase_name = mon\n'
        'default_retention_hours = 24\n\n'
        '[repositories]\nmetrics_driver = monasca_persister_dbpt.api.'
        'metrics_repository:MetricsRepository\n\n'
        '[dbpt]\ndatabase_template = %s\nservers = two:%s\n'
        'tenant_overrides_file = %s\nretention_tiers = 10m:1w\n'
        % (influx.host, influx.port, TEMPLATE, settings['servers']['two'],
           overrides))
    api_conf.register_opts()
    cfg.CONF(['--config-file', str(path)], project='monasca-api',
             default_config_files=[])
    yield path
    cfg.CONF.reset()
    cfg.CONF.clear()


def _repo():
    from monasca_common.simport import simport
    return simport.load(cfg.CONF.repositories.metrics_driver)()


def test_monasca_api_loads_the_driver_by_its_config_string(api):
    repo = _repo()
    assert isinstance(repo, metrics_repository.MetricsRepository)
    assert repo.check_status() == (True, 'OK')


def test_every_read_returns_exactly_what_was_sent_per_tenant(api, written):
    sent, _, _ = written
    repo = _repo()
    for tenant in TENANTS:
        mine = sent[tenant]
        series = {(r['metric']['name'],
                   tuple(sorted(r['metric']['dimensions'].items())))
                  for r in mine}
        listed = repo.list_metrics(tenant, REGION, None, None, None, 1000)
        assert {(m['name'], tuple(sorted(m['dimensions'].items())))
                for m in listed} == series
        assert sorted(n['name'] for n in repo.list_metric_names(
            tenant, REGION, None)) == ['cpu.idle_perc', 'mem.free_mb']
        hosts = repo.list_dimension_values(tenant, REGION, 'cpu.idle_perc',
                                           'hostname')
        assert sorted(v['dimension_value'] for v in hosts) == [
            '%s-h%d' % (tenant, h) for h in range(3)]
        measured = repo.measurement_list(
            tenant, REGION, 'cpu.idle_perc', {'hostname': tenant + '-h1'},
            NOW_S - 3600, NOW_S + 60, None, 1000, False, None)
        (only,) = measured
        expected = [r for r in mine if r['metric']['name'] == 'cpu.idle_perc'
                    and r['metric']['dimensions']['hostname'] ==
                    tenant + '-h1']
        assert [m[1] for m in only['measurements']] == [
            r['metric']['value'] for r in expected]
        assert only['measurements'][0][2] == {'n': '0'}
        history = repo.alarm_history(tenant, ['%s-alarm' % tenant], None,
                                     100)
        assert [h['new_state'] for h in history] == ['ALARM', 'OK'] * 2
        assert all(h['alarm_id'] == tenant + '-alarm' for h in history)
        assert history[0]['sub_alarms'][0]['sub_alarm_expression'][
            'metric_name'] == 'cpu.idle_perc'


def test_a_tenant_never_sees_another_tenants_data(api, influx, two):
    repo = _repo()
    assert repo.list_metrics('nobody', REGION, None, None, None, 10) == []
    for tenant in TENANTS:
        others = [t for t in TENANTS if t != tenant]
        for metric in repo.list_metrics(tenant, REGION, None, None, None,
                                        1000):
            assert metric['dimensions']['hostname'].startswith(tenant)
        for other in others:
            assert repo.measurement_list(
                tenant, REGION, 'cpu.idle_perc', {'hostname': other + '-h0'},
                NOW_S - 3600, NOW_S + 60, None, 100, False, None) == []
            assert repo.alarm_history(tenant, [other + '-alarm'], None,
                                      10) == []
    # tb lives on the second server only, in its templated database.
    assert two.databases() == {'t-tb-mon'}
    assert influx.databases() == {'t-ta-mon', 't-tc-mon'}


def test_an_invalid_tenant_id_reads_nothing_and_queries_no_database(
        api, influx, two):
    repo = _repo()
    for hostile in ('../ta', 'ta"; DROP DATABASE "t-ta-mon', '', 'x' * 300):
        assert repo.list_metrics(hostile, REGION, None, None, None, 10) \
            == []
        assert repo.query_tenant_db('show measurements', hostile) is None
    assert influx.databases() == {'t-ta-mon', 't-tc-mon'}


def test_a_bad_placement_option_stops_the_read_driver_naming_it(
        api, tmp_path):
    cfg.CONF.set_override('database_template', 'mon_{tenant}', 'dbpt')
    with pytest.raises(ValueError, match=r'\[dbpt\] database_template'):
        _repo()


def _statistics(repo, tenant, start, period=600, group_by=None):
    (result,) = repo.metrics_statistics(
        tenant, REGION, 'cpu.idle_perc', {'hostname': tenant + '-h2'},
        start, NOW_S + 600, ['avg', 'min', 'max', 'count', 'sum'], period,
        None, 100, False, group_by)
    return result['columns'], [row[1:] for row in result['statistics']]


def test_statistics_come_from_the_tier_when_older_than_raw_and_agree(
        api, monkeypatch):
    repo = _repo()
    statements = []
    real = repo._client

    def spy(server):
        client = real(server)
        original = client.query

        def query(q, *args, **kwargs):
            statements.append(q)
            return original(q, *args, **kwargs)
        monkeypatch.setattr(client, 'query', query)
        return client
    monkeypatch.setattr(repo, '_client', spy)
    for tenant in TENANTS:
        statements.clear()
        # Within the raw policy (24 h): raw points.
        columns, raw = _statistics(repo, tenant, NOW_S - 3600)
        assert not any('tier_10m' in s for s in statements)
        assert columns == ['timestamp', 'avg', 'min', 'max', 'count', 'sum']
        statements.clear()
        # Older than the raw policy keeps: the tier, same answers.
        columns2, tiered = _statistics(repo, tenant, NOW_S - 2 * 86400)
        assert any('"tier_10m"."cpu.idle_perc"' in s for s in statements)
        assert columns2 == columns
        assert len(tiered) == len(raw) == 3
        for a, b in zip(raw, tiered):
            assert a[1:4] == b[1:4]  # min, max, count exact
            assert a[0] == pytest.approx(b[0]) and a[4] == pytest.approx(b[4])
        # With group_by (monasca-api writes "group by *,time(...)"): the
        # tier too, the same answers, never an empty list.
        for group_by in ('*', 'hostname'):
            statements.clear()
            _, grouped = _statistics(repo, tenant, NOW_S - 2 * 86400,
                                     group_by=group_by)
            assert any('"tier_10m"."cpu.idle_perc"' in s for s in statements)
            assert grouped == tiered, group_by
        # A period the tier cannot serve (not a multiple of 10 min): raw.
        statements.clear()
        _statistics(repo, tenant, NOW_S - 2 * 86400, period=900)
        assert not any('tier_10m' in s for s in statements)
