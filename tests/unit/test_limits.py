"""Per-tenant limits without a server: rules, overrides, rate, series."""

import logging
import threading
import time

import pytest

from monasca_persister_dbpt.limits import LimitExceeded, Limits
from monasca_persister_dbpt.limits import LimitsTable, TenantLimits
from monasca_persister_dbpt.limits import series as series_mod
from monasca_persister_dbpt.limits.rate import RateLimiter
from monasca_persister_dbpt.limits.series import SeriesCaps, SeriesFilter
from monasca_persister_dbpt.placement import InvalidOption, TenantOverrides
from monasca_persister_dbpt.placement import overrides as overrides_mod
from monasca_persister_dbpt.repositories.metrics import MetricsRepository
from tests import records


def _overrides(tmp_path, text, servers=('default', 'b')):
    path = tmp_path / 'overrides'
    path.write_text(text)
    return path, TenantOverrides(str(path), servers)


def test_overrides_file_gives_servers_and_settings(tmp_path):
    _, ov = _overrides(tmp_path, '# tenant server settings\n'
                                 'a b\n'
                                 'noisy ingestion_rate=5.5 max_series=10\n'
                                 'both b max_dimensions=0  # off\n')
    assert ov.server_of('a') == 'b' and ov.settings_of('a') == {}
    assert ov.server_of('noisy') is None
    assert ov.settings_of('noisy') == {'ingestion_rate': 5.5,
                                       'max_series': 10}
    assert ov.server_of('both') == 'b'
    assert ov.settings_of('both') == {'max_dimensions': 0}


@pytest.mark.parametrize('line, why', [
    ('t nowhere', "server 'nowhere' is not in"),
    ('t', 'needs a server or key=value'),
    ('t max_serie=3', "'max_serie=3' is not key=value"),
    ('t max_series=-1', 'max_series=\'-1\': must be 0'),
    ('t max_series=lots', "max_series='lots': not a number"),
    ('t ingestion_rate=inf', 'must be a finite number'),
    ('t max_series=1 max_series=2', 'max_series is set twice'),
    ('t b\nt max_series=1', 'already on an earlier line'),
])
def test_bad_overrides_file_at_start_names_the_option_and_line(
        tmp_path, line, why):
    with pytest.raises(InvalidOption) as error:
        _overrides(tmp_path, 'ok b\n' + line + '\n')
    message = str(error.value)
    assert message.startswith('[dbpt] tenant_overrides_file: ')
    assert 'line %d' % (line.count('\n') + 2) in message
    assert why in message


def test_bad_edit_keeps_the_last_good_file_and_says_why(
        tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(overrides_mod, 'CHECK_EVERY', 0)
    path, ov = _overrides(tmp_path, 'a max_series=5\n')
    table = LimitsTable(Limits(), ov)
    assert table('a').max_series == 5
    path.write_text('a max_series=7\n')
    ov.check()
    assert table('a').max_series == 7  # the cache follows the file
    with caplog.at_level(logging.ERROR):
        path.write_text('a max_series=seven\n')
        ov.check()
    assert table('a').max_series == 7
    assert 'line 1' in caplog.text and 'keeping the last good' in caplog.text


def test_limits_table_overrides_only_what_a_tenant_sets(tmp_path):
    _, ov = _overrides(tmp_path, 'a max_name_length=0 ingestion_rate=2\n')
    table = LimitsTable(Limits(max_series=100, max_name_length=255), ov)
    assert table('a') == Limits(max_series=100, max_name_length=0,
                                ingestion_rate=2.0)
    assert table('other') == table.defaults
    assert table('a').burst == 20.0  # ten seconds of rate by default


def test_token_bucket_allows_the_burst_then_the_rate():
    rate = RateLimiter()
    now = 1000.0
    allowed = sum(rate.take('t', 10, 30, now) for _ in range(100))
    assert allowed == 30
    assert not rate.take('t', 10, 30, now)
    assert sum(rate.take('t', 10, 30, now + 1.0) for _ in range(100)) == 10
    assert rate.take('other', 10, 30, now)  # one tenant's bucket only


def test_rate_is_shared_between_workers():
    rate = RateLimiter(share=0.25)
    assert sum(rate.take('t', 100, 400, 0.0) for _ in range(1000)) == 100


def test_rate_buckets_are_bounded():
    rate = RateLimiter(tenants_max=1000)
    for i in range(5000):
        rate.take('t%d' % i, 1, 1, 0.0)
    assert len(rate) == 1000


def test_series_filter_never_forgets_and_rarely_invents():
    known = ['cpu,_tenant_id=t,host=h%d' % i for i in range(20000)]
    series = SeriesFilter()
    for key in known:
        series.add(key)
    assert all(key in series for key in known)
    invented = sum(('mem,host=x%d' % i) in series for i in range(20000))
    assert invented / 20000 < 0.01
    assert series.count >= 20000 * 0.99
    assert series.nbytes < 20000 * 5  # bytes, far below an exact set


def test_series_cap_refuses_new_series_only():
    caps = SeriesCaps()
    assert all(caps.admit('t', 'k%d' % i, 3) for i in range(3))
    assert not caps.admit('t', 'k3', 3)
    assert caps.admit('t', 'k1', 3)  # an existing series is still written
    assert caps.admit('other', 'k3', 3)


def test_series_count_is_seeded_from_the_database():
    stored = {'t': ['k%d' % i for i in range(5)]}
    caps = SeriesCaps(seed=lambda tenant: stored.get(tenant, []))
    assert caps.admit('t', 'k0', 6)  # known, and asks for the count
    assert caps.wait_seeded(5)
    assert caps.count('t') == 5
    assert caps.admit('t', 'new', 6)
    assert not caps.admit('t', 'newer', 6)
    assert caps.admit('t', 'k4', 6)


def test_a_failed_seed_is_tried_again(monkeypatch):
    monkeypatch.setattr(series_mod, 'SEED_RETRY', 0.05)
    calls = []

    def seed(tenant):
        calls.append(tenant)
        if len(calls) == 1:
            raise ConnectionError('down')
        return ['a', 'b']
    caps = SeriesCaps(seed=seed)
    caps.admit('t', 'x', 10)
    deadline = time.monotonic() + 5
    while not caps.seeded('t') and time.monotonic() < deadline:
        time.sleep(0.06)
        caps.admit('t', 'x', 10)
    assert caps.seeded('t') and caps.count('t') == 3
    assert caps.seed_failures == 1


def test_series_state_stays_within_its_budget():
    caps = SeriesCaps(budget_bytes=200000)
    for tenant in range(2000):
        for i in range(20):
            caps.admit('t%d' % tenant, 's%d' % i, 100)
    assert caps.nbytes <= 200000
    assert caps.evicted > 0 and len(caps) < 2000


def _limits(**defaults):
    return TenantLimits(LimitsTable(Limits(**defaults),
                                    TenantOverrides(None)),
                        clock=lambda: 1700000000.0)


def test_shape_limits_name_the_limit():
    limits = _limits(max_dimensions=2, max_dimension_length=5)
    own = limits('t')
    limits.check_shape(own, 'cpu', {'a': '1', 'b': '2'})
    with pytest.raises(LimitExceeded, match='over max_dimensions 2') as e:
        limits.check_shape(own, 'cpu', {'a': '1', 'b': '2', 'c': '3'})
    assert e.value.reason == 'dimensions'
    with pytest.raises(LimitExceeded, match='max_dimension_length 5'):
        limits.check_shape(own, 'cpu', {'a': '123456'})
    with pytest.raises(LimitExceeded, match='max_name_length 255'):
        limits.check_shape(own, 'x' * 256, {})


def _repo(conf, **options):
    for name, value in options.items():
        conf.set_override(name, value, 'dbpt')
    return MetricsRepository(conf)


def _send(repo, rec, offset=0):
    return repo.process_message(records.Message(records.encode(rec), offset))


def test_driver_refuses_over_limit_points_with_a_counted_reason(conf):
    now = int(time.time() * 1000)
    repo = _repo(conf, max_value_meta_bytes=50, max_future_seconds=60,
                 max_dimensions=3)
    assert _send(repo, records.metric('t', timestamp=now))[0]
    big = records.metric('t', timestamp=now)
    big['metric']['value_meta'] = {'k': 'v' * 100}
    assert _send(repo, big) == (None, None)
    assert _send(repo, records.metric('t', timestamp=now + 120000)) == \
        (None, None)
    many = records.metric('t', timestamp=now)
    many['metric']['dimensions'] = {'d%d' % i: 'x' for i in range(4)}
    assert _send(repo, many) == (None, None)
    counts = repo.stats.tenant('t')
    assert counts == {'refused_value_meta_size': 1, 'refused_future': 1,
                      'refused_dimensions': 1}


def test_driver_refuses_points_older_than_the_retention(conf):
    conf.set_override('default_retention_hours', 24, 'influxdb')
    repo = MetricsRepository(conf)
    now = int(time.time() * 1000)
    assert _send(repo, records.metric('t', timestamp=now - 3600000))[0]
    assert _send(repo, records.metric('t', timestamp=now - 25 * 3600000)) \
        == (None, None)
    assert repo.stats.tenant('t') == {'refused_too_old': 1}


def test_driver_rate_refusals_cost_no_series_and_are_per_tenant(conf):
    repo = _repo(conf, ingestion_rate=1.0, ingestion_burst=5)
    now = int(time.time() * 1000)
    sent = [_send(repo, records.metric('fast', timestamp=now + i))
            for i in range(50)]
    assert sum(1 for line, _ in sent if line) in (5, 6)
    assert all(_send(repo, records.metric('calm', timestamp=now + i))[0]
               for i in range(5))
    assert repo.stats.tenant('fast')['refused_rate'] >= 44
    assert 'refused_rate' not in repo.stats.tenant('calm')


def test_driver_caps_new_series_and_keeps_writing_old_ones(conf):
    repo = _repo(conf, max_series=3)
    repo.limits.series._seed = None  # no server in a unit test
    now = int(time.time() * 1000)

    def host(i, ts):
        rec = records.metric('t', timestamp=ts)
        rec['metric']['dimensions'] = {'request': str(i)}
        return rec
    accepted = [i for i in range(10) if _send(repo, host(i, now))[0]]
    assert accepted == [0, 1, 2]
    repo._series.clear()  # forgotten by the cache, still known by the cap
    assert all(_send(repo, host(i, now + 1))[0] for i in (0, 1, 2))
    assert repo.stats.tenant('t') == {'refused_series': 7}


def test_prometheus_counters_have_tenant_reason_and_pid(tmp_path):
    import os

    from prometheus_client.parser import text_string_to_metric_families

    from monasca_persister_dbpt.limits import exposition
    from monasca_persister_dbpt.stats import Stats
    stats = Stats(interval=0)
    stats.add('a', 'refused_rate', 3)
    stats.add('a', 'points_written', 7)
    stats.add('b', 'dropped_field_type_conflict')
    stats.gauge('points_buffered', lambda: 12)
    exporter = exposition.PrometheusExporter(stats, str(tmp_path))
    exporter.export()
    # Another worker's file, and one of a worker that ended.
    other = (tmp_path / 'monasca_persister_dbpt_1.prom')
    other.write_text(open(exporter.path).read().replace(
        'pid="%d"' % os.getpid(), 'pid="1"'))
    ended = tmp_path / 'monasca_persister_dbpt_999999999.prom'
    ended.write_text('')
    exporter.export()
    assert not ended.exists() and other.exists()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in exposition._Directory(str(tmp_path)).collect()
               for s in f.samples}
    pid = str(os.getpid())
    key = ('monasca_persister_dbpt_points_refused_total',
           (('pid', pid), ('reason', 'rate'), ('tenant', 'a')))
    assert samples[key] == 3
    assert samples[(key[0], (('pid', '1'), ('reason', 'rate'),
                             ('tenant', 'a')))] == 3
    assert samples[('monasca_persister_dbpt_points_dropped_total',
                    (('pid', pid), ('reason', 'field_type_conflict'),
                     ('tenant', 'b')))] == 1
    assert samples[('monasca_persister_dbpt_points_written_total',
                    (('pid', pid), ('tenant', 'a')))] == 7
    assert samples[('monasca_persister_dbpt_points_buffered',
                    (('pid', pid),))] == 12
    # The merged text is valid exposition: one family per name.
    from prometheus_client import CollectorRegistry, generate_latest
    registry = CollectorRegistry(auto_describe=False)
    registry.register(exposition._Directory(str(tmp_path)))
    text = generate_latest(registry).decode()
    assert text.count('# TYPE monasca_persister_dbpt_points_refused_total') \
        <= 1 and text.count('# TYPE monasca_persister_dbpt_points_refused') == 1
    assert len(list(text_string_to_metric_families(text))) >= 4


@pytest.mark.parametrize('address', ['9090', 'host:', 'host:70000', ':80'])
def test_a_bad_prometheus_address_stops_start_up_naming_it(conf, address):
    conf.set_override('prometheus_address', address, 'dbpt')
    with pytest.raises(ValueError, match=r'\[dbpt\] prometheus_address'):
        MetricsRepository(conf)


def test_a_down_server_logs_one_seed_failure_not_one_per_tenant(caplog):
    def seed(tenant):
        raise ConnectionError('refused')
    caps = SeriesCaps(seed=seed)
    with caplog.at_level(logging.WARNING):
        for i in range(200):
            assert caps.admit('t%d' % i, 'k', 10)  # admitted meanwhile
        deadline = time.monotonic() + 5
        while caps.seed_failures < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert caps.seed_failures == 200
    assert len([r for r in caplog.records
                if 'cannot count the series' in r.getMessage()]) == 1


def test_every_gauge_of_a_driver_is_its_own_family_in_the_merged_text(
        conf, tmp_path):
    """A gauge named like a per-tenant counter would merge into the
    counter's family and lose its TYPE line."""
    from prometheus_client import CollectorRegistry, generate_latest

    from monasca_persister_dbpt.limits import exposition
    repo = MetricsRepository(conf)
    counters = {'points_written', 'write_requests', 'records_refused',
                'databases_created', 'policies_altered', 'databases_refused',
                'points_held', 'points_spilled', 'points_replayed', 'retries',
                'write_failures'}
    gauges = set(repo.stats._gauges) | set(repo.stats._labelled)
    assert {'held_points', 'server_up', 'points_waiting'} <= gauges
    assert not gauges & counters
    for counter in counters:
        repo.stats.add('t', counter)
    exporter = exposition.PrometheusExporter(repo.stats, str(tmp_path))
    exporter.export()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(exposition._Directory(str(tmp_path)))
    text = generate_latest(registry).decode()
    for name in repo.stats._gauges:
        assert '# TYPE monasca_persister_dbpt_%s gauge' % name in text, name
    assert 'monasca_persister_dbpt_server_up{pid=' in text


class _Worker:
    """A worker whose admitted points reach the database only at its
    batch's end, or when its series are about to be counted."""

    lock = threading.Lock()

    def __init__(self, database, share, batch):
        self.database, self.batch, self.pending = database, batch, []
        self.caps = SeriesCaps(seed=self.read, share=share)
        self.caps.before_count = lambda tenant: self.write()

    def read(self, tenant):
        with self.lock:
            return list(self.database)

    def write(self):
        with self.lock:
            self.database.update(self.pending)
            self.pending = []

    def send(self, key, cap):
        if self.caps.admit('t', key, cap):
            self.pending.append(key)
            if len(self.pending) >= self.batch:
                self.write()


@pytest.mark.parametrize('workers', [2, 3])
def test_workers_sharing_a_database_pass_its_cap_by_at_most_one_each(
        workers):
    """Each worker writes what it admitted before it counts the database,
    so the others' counts hold it: the database passes the cap by at most
    one series per other worker (all admitting their last at once)."""
    database, cap = set(), 100
    procs = [_Worker(database, 1.0 / workers, batch=40)
             for _ in range(workers)]
    for i in range(1000):
        procs[i % workers].send('s%d' % i, cap)
    for proc in procs:
        proc.write()
    assert cap <= len(database) <= cap + workers - 1, len(database)


def test_without_writing_before_counting_the_workers_pass_the_cap():
    """The stand-in above is a real test: counts that miss the others'
    unwritten series let the database far past the cap."""
    database, cap = set(), 100
    procs = [_Worker(database, 0.5, batch=40) for _ in range(2)]
    for proc in procs:
        proc.caps.before_count = None
    for i in range(1000):
        procs[i % 2].send('s%d' % i, cap)
    for proc in procs:
        proc.write()
    assert len(database) > cap + 1


def test_a_slow_count_admits_one_series_at_a_time(monkeypatch):
    """The host's thread does not wait for a slow count longer than
    RECOUNT_WAIT, and meanwhile admits one series for each wait (not the
    allowance of a count that has not come), with one count under way."""
    monkeypatch.setattr(series_mod, 'RECOUNT_WAIT', 0.02)
    release, calls = threading.Event(), []

    def seed(tenant):
        calls.append(tenant)
        if len(calls) > 1:  # the first fill is quick, the recounts hang
            release.wait(10)
        return []
    caps = SeriesCaps(seed=seed)
    try:
        assert caps.admit('t', 'k0', 1000)  # the fill, then allowance 1
        assert caps.wait_seeded(5)
        for i in range(1, 6):
            assert caps.admit('t', 'k%d' % i, 1000)
        assert caps._tenants['t'].allow == 0
        assert len(calls) == 2  # one fill, one recount under way
    finally:
        release.set()


def test_a_workers_share_follows_its_partitions():
    """share_of (its partitions over the topic's) replaces the process's
    1/num_processors once the count thread has asked for it."""
    caps = SeriesCaps(seed=lambda t: [], share=1.0)
    caps.share_of = lambda: 0.25
    caps.admit('t', 'k0', 1000)
    assert caps.wait_seeded(5)
    caps.admit('t', 'k1', 1000)
    caps._tenants['t'].allow = 0
    caps.admit('t', 'k2', 1000)  # counts again with the new share
    assert caps._share == 0.25
    assert caps._tenants['t'].allow == int((1000 - 2) * 0.25 / 2) - 1
