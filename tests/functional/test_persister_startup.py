"""The real persister: what it refuses at start, what it says, what it
reports, and one tenant's refused database costing nobody else."""

import json
import os
import time

from tests import records
from tests.functional.test_persister_end_to_end import counts, produce
from tests.functional.test_persister_end_to_end import wait_until
from tests.functional.test_persister_end_to_end import persister  # noqa: F401
from tests.functional.test_persister_end_to_end import topics  # noqa: F401
from tests.functional.test_tenant_isolation import REFUSED

NOW = int(time.time() * 1000)


def _stats(proc):
    out = []
    for name in os.listdir(proc.dir):
        if name.startswith('stats.json.') and not name.endswith('.tmp'):
            with open(os.path.join(proc.dir, name)) as handle:
                out.append(json.load(handle))
    return out


def test_a_refused_template_stops_start_up_and_consumes_nothing(
        influx, broker, topics, persister):  # noqa: F811
    produce(broker, topics['metrics_topic'],
            [records.encode(records.metric(t, timestamp=NOW - i))
             for i in range(20) for t in ('a', 'b')])
    proc = persister(extra='database_template = mon_{{tenant_id}}')
    assert wait_until(lambda: not proc.alive(), 60), 'still running'
    log = proc.logtext()
    assert 'refuses to start' in log and '[dbpt] database_template' in log
    assert influx.databases() == set()
    # Nothing was committed: a persister with an accepted (non-default)
    # template reads every record, one database per tenant.
    good = persister(extra='database_template = t-{tenant_id}-{database_name}')
    assert wait_until(lambda: counts(influx, '"cpu.idle_perc"', 'value') ==
                      {'t-a-mon': 20, 't-b-mon': 20}, 60), \
        good.logtext()[-2000:]


def test_a_database_influxdb_refuses_costs_its_tenant_alone_end_to_end(
        influx, broker, topics, persister):  # noqa: F811
    wave = [records.encode(records.metric(t, timestamp=NOW - i, value=i))
            for i in range(300) for t in ('good-1', REFUSED, 'good-2')]
    produce(broker, topics['metrics_topic'], wave)
    proc = persister(batch_size=100,
                     extra='tenant_id_pattern = \\S{1,64}\nhold_after = 1\n'
                           'retry_timeout = 5')
    ok = {'mon_good-1': 300, 'mon_good-2': 300}
    assert wait_until(lambda: counts(influx, '"cpu.idle_perc"', 'value') ==
                      ok, 60), proc.logtext()[-2000:]

    def refused():
        return sum(s['tenants'].get(REFUSED, {}).get(
            'dropped_database_refused', 0) for s in _stats(proc))
    assert wait_until(lambda: refused() == 300, 30), _stats(proc)
    log = proc.logtext()
    assert 'Kafka commits paused' not in log and 'marked down' not in log
    assert 'invalid name' in log
    assert proc.alive()


def test_an_idle_worker_reports_and_each_worker_says_what_is_on(
        influx, broker, topics, persister):  # noqa: F811
    produce(broker, topics['metrics_topic'],
            [records.encode(records.metric('t', timestamp=NOW - i))
             for i in range(10)])
    # Records on the metrics topic only: the alarm worker is idle.
    proc = persister(extra='held_points_max = 0')
    assert wait_until(lambda: len(_stats(proc)) == 2, 30), \
        proc.logtext()[-2000:]
    log = proc.logtext()
    for kind in ('metric', 'alarm transition'):
        assert 'monasca-persister-dbpt %s driver in pid' % kind in log
    assert log.count('held points off ([dbpt] held_points_max = 0)') == 2
    assert 'at the low watermark of written records (commit guard)' in log


def test_with_the_legacy_client_no_guard_is_claimed(
        influx, broker, topics, persister):  # noqa: F811
    proc = persister(extra='\n[kafka]\nlegacy_kafka_client_enabled = True\n'
                           '[zookeeper]\nuri = 127.0.0.1:1\n')
    assert wait_until(lambda: 'driver in pid' in proc.logtext(), 30), \
        proc.logtext()[-2000:]
    log = proc.logtext()
    assert "the legacy client's own" in log
    assert 'commit guard installed' not in log


def test_a_fetch_backoff_out_of_range_stops_start_up_naming_it(
        influx, broker, topics, persister):  # noqa: F811
    proc = persister(extra='fetch_queue_backoff_ms = -5')
    assert wait_until(lambda: not proc.alive(), 60), 'still running'
    log = proc.logtext()
    assert 'fetch_queue_backoff_ms' in log and 'refuses to start' in log, \
        log[-2000:]
