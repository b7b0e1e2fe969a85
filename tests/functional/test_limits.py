"""Per-tenant limits with the real persister, tansu and influxd."""

import glob
import json
import os
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from monasca_persister_dbpt.placement import overrides as overrides_mod
from tests import records
from tests import servers
from tests.functional.test_persister_end_to_end import counts, produce
from tests.functional.test_persister_end_to_end import persister  # noqa: F401
from tests.functional.test_persister_end_to_end import topics  # noqa: F401
from tests.functional.test_persister_end_to_end import wait_until

NOW = int(time.time() * 1000)


def _series(influx, db):
    if db not in influx.databases():
        return 0
    rows = influx.rows('SHOW SERIES', db)
    return len(rows)


def _metric(tenant, i, request=None, ts=NOW):
    dims = {'hostname': 'h%d' % (i % 3)}
    if request is not None:
        dims['request_id'] = 'r%d' % request
    return records.encode(records.metric(tenant, dimensions=dims,
                                         timestamp=ts - i, value=i))


def _totals(proc_dir, tenant):
    """Counters of a tenant summed over the workers' stats files."""
    out = {}
    for path in glob.glob(os.path.join(proc_dir, 'stats.json.*')):
        if path.endswith('.tmp'):
            continue
        with open(path) as handle:
            for event, n in json.load(handle)['tenants'].get(
                    tenant, {}).items():
                out[event] = out.get(event, 0) + n
    return out


def test_a_series_explosion_is_capped_while_other_tenants_keep_every_point(
        influx, broker, topics, persister):  # noqa: F811
    # The runaway tenant already holds 30 series: the cap counts them.
    influx.query('CREATE DATABASE "mon_runaway"')
    influx.write('mon_runaway', [
        'cpu.idle_perc,_region=RegionOne,_tenant_id=runaway,hostname=old%d '
        'value=1 %d' % (i, NOW - 60000) for i in range(30)])
    extra = 'max_series = 50'
    steady = ['steady-1', 'steady-2']
    first = [_metric(t, i) for t in steady for i in range(100)]
    first.append(records.encode(records.metric(
        'runaway', dimensions={'hostname': 'old0'}, timestamp=NOW)))
    produce(broker, topics['metrics_topic'], first)
    proc = persister(batch_size=200, extra=extra)
    assert wait_until(lambda: counts(influx, '"cpu.idle_perc"', 'value')
                      .get('mon_steady-2') == 100, 60), proc.logtext()[-3000:]
    # A dimension holding a request id: 2,000 new series, while the others
    # keep sending and the runaway's existing series keep being written.
    burst = []
    for i in range(2000):
        burst.append(_metric('runaway', i, request=i))
        if i % 10 == 0:
            burst += [_metric(t, 100 + i // 10) for t in steady]
            burst.append(records.encode(records.metric(
                'runaway', dimensions={'hostname': 'old%d' % (i // 10 % 30)},
                timestamp=NOW + 1 + i)))
    produce(broker, topics['metrics_topic'], burst)
    expected_steady = 100 + 200

    def settled():
        got = counts(influx, '"cpu.idle_perc"', 'value')
        return all(got.get('mon_' + t) == expected_steady for t in steady)
    assert wait_until(settled, 90), proc.logtext()[-3000:]

    def old_points():
        return influx.rows(
            'SELECT count(value) FROM "cpu.idle_perc" WHERE hostname =~ '
            '/^old/', 'mon_runaway')[0]['count']
    # The existing series kept every point (a quiet buffer waits max_delay).
    assert wait_until(lambda: old_points() == 30 + 1 + 200, 30), old_points()
    # 30 existing + 20 new; a Bloom filter may let 1% more through.
    assert 50 <= _series(influx, 'mon_runaway') <= 51
    assert wait_until(lambda: _totals(proc.dir, 'runaway').get(
        'refused_series', 0) >= 1950, 30)
    assert 'over its limit (refused_series' in proc.logtext()
    # A restart counts the series from the database again: still capped.
    proc.stop()
    produce(broker, topics['metrics_topic'],
            [_metric('runaway', i, request=5000 + i) for i in range(300)] +
            [_metric('steady-1', 400 + i) for i in range(50)])
    proc = persister(batch_size=200, extra=extra)
    assert wait_until(lambda: counts(influx, '"cpu.idle_perc"', 'value')
                      .get('mon_steady-1') == expected_steady + 50, 60), \
        proc.logtext()[-3000:]
    time.sleep(2)
    assert 50 <= _series(influx, 'mon_runaway') <= 51
    assert proc.alive()


def test_a_tenant_over_its_rate_is_refused_beyond_its_burst_and_counted(
        influx, broker, topics, persister, tmp_path):  # noqa: F811
    overrides = tmp_path / 'overrides'
    overrides.write_text('flood ingestion_rate=20 ingestion_burst=100\n')
    prom_dir = tmp_path / 'prom'
    port = servers.free_port()
    extra = ('tenant_overrides_file = %s\nprometheus_textfile_dir = %s\n'
             'prometheus_address = 127.0.0.1:%d\nprometheus_interval = 1'
             % (overrides, prom_dir, port))
    sent = [_metric('flood', i) for i in range(3000)]
    sent += [_metric('calm', i) for i in range(300)]
    produce(broker, topics['metrics_topic'], sent)
    started = time.monotonic()
    proc = persister(batch_size=500, extra=extra)
    assert wait_until(lambda: counts(influx, '"cpu.idle_perc"', 'value')
                      .get('mon_calm') == 300, 60), proc.logtext()[-3000:]

    def accounted():
        written = counts(influx, '"cpu.idle_perc"', 'value').get(
            'mon_flood', 0)
        return written, _totals(proc.dir, 'flood').get('refused_rate', 0)
    assert wait_until(lambda: sum(accounted()) == 3000, 60), accounted()
    elapsed = time.monotonic() - started
    written, refused = accounted()
    # The burst, then 20 points a second for as long as it ran at most.
    assert 100 <= written <= 100 + 20 * elapsed + 1
    assert refused >= 3000 - 100 - 20 * elapsed - 1
    # The same counters in the Prometheus text format, file and HTTP.

    def exposed(text):
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.endswith('points_refused_total') and \
                        sample.labels.get('tenant') == 'flood':
                    return sample.labels['reason'], sample.value
        return None
    assert wait_until(lambda: exposed(requests.get(
        'http://127.0.0.1:%d/metrics' % port, timeout=5).text) ==
        ('rate', refused), 30)
    files = glob.glob(str(prom_dir / '*.prom'))
    assert len(files) == 2  # the metrics and the alarm history workers
    assert any(exposed(open(f).read()) == ('rate', refused) for f in files)


def test_an_overrides_edit_takes_effect_without_a_restart(
        influx, broker, topics, persister, tmp_path):  # noqa: F811
    overrides = tmp_path / 'overrides'
    overrides.write_text('edit max_series=5\n')
    extra = 'tenant_overrides_file = %s\nmax_delay = 1' % overrides
    proc = persister(batch_size=50, max_wait=1, extra=extra)
    produce(broker, topics['metrics_topic'],
            [_metric('edit', i, request=i) for i in range(20)])
    assert wait_until(lambda: _totals(proc.dir, 'edit').get(
        'refused_series') == 15, 60), proc.logtext()[-3000:]
    assert wait_until(lambda: _series(influx, 'mon_edit') == 5, 30)
    overrides.write_text('edit max_series=12\n# raised\n')
    time.sleep(overrides_mod.CHECK_EVERY + 1)  # looked at every 10 s
    produce(broker, topics['metrics_topic'],
            [_metric('edit', i, request=100 + i) for i in range(20)])
    assert wait_until(lambda: _series(influx, 'mon_edit') == 12, 60), \
        proc.logtext()[-3000:]
    time.sleep(2)
    assert _series(influx, 'mon_edit') == 12
    assert 'tenant overrides file %s changed' % overrides in proc.logtext()
    assert proc.alive()


@pytest.mark.parametrize('layout', ['two workers', 'two persisters'])
def test_the_series_cap_is_the_databases_whatever_the_workers(
        influx, broker, topics, persister, tmp_path, layout):  # noqa: F811
    """max_series counts what the tenant database holds: two workers (or
    two persister processes in one group) flooding one tenant with new
    series no longer pass it by a cap each."""
    cap = 200
    extra = 'max_series = %d' % cap
    if layout == 'two workers':
        procs = [persister(batch_size=200, num_processors=2, extra=extra)]
    else:
        procs = [persister(batch_size=200, extra=extra),
                 servers.Persister(influx, broker, str(tmp_path / 'other'),
                                   batch_size=200, extra=extra,
                                   **topics).start()]
    try:
        # 2,000 new series spread over every partition, then a marker
        # tenant that says everything before it was read.
        producer = broker.producer()
        for i in range(2000):
            producer.produce(topics['metrics_topic'],
                             _metric('flood', i, request=i),
                             partition=i % 4)
        assert producer.flush(30) == 0
        produce(broker, topics['metrics_topic'],
                [_metric('marker', i) for i in range(40)])
        assert wait_until(lambda: counts(influx, '"cpu.idle_perc"', 'value')
                          .get('mon_marker') == 40, 120), \
            procs[0].logtext()[-3000:]

        def refused():
            return sum(_totals(p.dir, 'flood').get('refused_series', 0)
                       for p in procs)
        # Every flood record was decided: written or refused.
        assert wait_until(lambda: _series(influx, 'mon_flood') + refused()
                          >= 2000, 60), (refused(), _series(influx,
                                                            'mon_flood'))
        held = _series(influx, "mon_flood")
        # Counted alone each worker let 401 to 403 in; counting without
        # waiting for the others' writes, 201 to 273. Now at most one per
        # other worker, plus the Bloom filters' false positives (at most
        # 1% of the 1,800 refused, 0.1% while under 256): measured 201 to
        # 203 (limits.rst).
        assert cap <= held <= cap + 1 + 18, held
    finally:
        if layout == 'two persisters':
            procs[1].stop()
