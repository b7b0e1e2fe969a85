"""The real monasca-persister 9.0.0 process, our drivers, tansu and influxd."""

import json
import os
import time
import uuid

import pytest

from tests import hostile
from tests import records
from tests import servers

TENANTS = ['a1b2c3d4e5f60718293a4b5c6d7e8f90', 'tenant-two', 'tenant_3']
NOW = int(time.time() * 1000)


def wait_until(check, timeout, interval=0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


def counts(influx, measurement, field):
    out = {}
    for db in influx.databases():
        rows = influx.rows('SELECT count(%s) FROM %s' % (field, measurement),
                           db)
        if rows:
            out[db] = rows[0]['count']
    return out


@pytest.fixture
def topics(broker):
    suffix = uuid.uuid4().hex[:8]
    names = {'metrics_topic': 'metrics_' + suffix,
             'alarms_topic': 'alarms_' + suffix, 'group': 'g' + suffix}
    broker.create_topic(names['metrics_topic'])
    broker.create_topic(names['alarms_topic'])
    return names


@pytest.fixture
def persister(influx, broker, topics, tmp_path):
    procs = []

    def start(**settings):
        settings = {**topics, **settings}
        proc = servers.Persister(influx, broker, str(tmp_path), **settings)
        procs.append(proc.start())
        return proc
    yield start
    for proc in procs:
        proc.stop()


def produce(broker, topic, payloads):
    producer = broker.producer()
    for i, payload in enumerate(payloads):
        producer.produce(topic, payload, key=str(i % 8).encode())
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0


#: The host's loop as it is, and with the batched consumer handing each
#: batch to the driver whole.
LOOPS = pytest.mark.parametrize('loop', ['', 'consume_batch = 1000\n'],
                                ids=['host-loop', 'batched'])


@LOOPS
def test_records_land_per_tenant_and_hostile_ones_are_refused(
        influx, broker, topics, persister, loop):
    per_tenant = {t: 200 + 50 * i for i, t in enumerate(TENANTS)}
    valid = []
    for tenant, n in per_tenant.items():
        valid += [records.encode(records.metric(
            tenant, dimensions={'hostname': 'h%d' % (i % 5)},
            timestamp=NOW - i, value=i)) for i in range(n)]
    hostile_metrics = [p for t, p, _ in hostile.CORPUS if t == hostile.M]
    hostile_alarms = [p for t, p, _ in hostile.CORPUS if t == hostile.A]
    mixed = []
    for i, payload in enumerate(valid):
        mixed.append(payload)
        if i % 10 == 0 and hostile_metrics:
            mixed.append(hostile_metrics.pop())
    mixed += hostile_metrics
    alarms = [records.encode(records.alarm(t, alarm_id='al-%d' % i,
                                           timestamp=NOW - i))
              for t in TENANTS for i in range(3)]
    produce(broker, topics['metrics_topic'], mixed)
    produce(broker, topics['alarms_topic'], alarms + hostile_alarms)

    proc = persister(batch_size=300, extra=loop)
    expected = {'mon_' + t: n for t, n in per_tenant.items()}
    wait_until(lambda: counts(influx, '"cpu.idle_perc"', 'value') ==
               expected, 90)
    wait_until(lambda: sum(counts(influx, 'alarm_state_history',
                                  'new_state').values()) >= 9, 30)
    time.sleep(3)  # anything extra would show now
    assert proc.alive(), proc.logtext()[-3000:]
    assert counts(influx, '"cpu.idle_perc"', 'value') == expected
    assert counts(influx, 'alarm_state_history', 'new_state') == {
        'mon_' + t: 3 for t in TENANTS}
    assert influx.databases() == set(expected)
    for tenant in TENANTS:
        db = 'mon_' + tenant
        seen = {r['_tenant_id'] for r in influx.rows(
            'SELECT count(value) FROM "cpu.idle_perc" GROUP BY _tenant_id',
            db)}
        assert seen == {tenant}
        seen = {r['tenant_id'] for r in influx.rows(
            'SELECT * FROM alarm_state_history', db)}
        assert seen == {tenant}
    log = proc.logtext()
    refused = [line for line in log.splitlines() if 'refused ' in line]
    assert len(refused) == len(hostile.CORPUS), '\n'.join(refused)
    assert 'Error processing message' not in log
    assert 'commit guard installed' in log
    assert ('batched consumer installed' in log) == bool(loop)
    assert 'fetches again 10 ms after its queue was full' in log


def test_persister_writes_stats_an_operator_can_read(
        influx, broker, topics, persister, tmp_path):
    produce(broker, topics['metrics_topic'],
            [records.encode(records.metric('t1', timestamp=NOW - i))
             for i in range(50)])
    proc = persister(batch_size=10)
    wait_until(lambda: counts(influx, '"cpu.idle_perc"', 'value') ==
               {'mon_t1': 50}, 60)
    stats_files = []

    def found():
        stats_files[:] = [f for f in os.listdir(proc.dir)
                          if f.startswith('stats.json.')
                          and not f.endswith('.tmp')]
        return any(json.load(open(os.path.join(proc.dir, f)))['totals']
                   .get('points_written') == 50 for f in stats_files)
    assert wait_until(found, 30), proc.logtext()[-2000:]
    assert 'dbpt totals' in proc.logtext()


class Feeder(records.Feeder):
    """Metrics for TENANTS in the background, counted per tenant."""

    def __init__(self, broker, topic):
        super().__init__(broker, topic, TENANTS, lambda tenant, i:
                         records.metric(tenant, timestamp=NOW - 10 ** 7 + i,
                                        value=i))

    def expected(self):
        return {'mon_' + t: n for t, n in self.sent.items()}


def assert_each_tenant_complete_and_alone(influx, feeder, proc):
    wait_until(lambda: counts(influx, '"cpu.idle_perc"', 'value') ==
               feeder.expected(), 120)
    assert counts(influx, '"cpu.idle_perc"', 'value') == feeder.expected(), \
        proc.logtext()[-2000:]
    for tenant in TENANTS:
        seen = {r['_tenant_id'] for r in influx.rows(
            'SELECT count(value) FROM "cpu.idle_perc" GROUP BY _tenant_id',
            'mon_' + tenant)}
        assert seen == {tenant}


@LOOPS
def test_sigkill_of_the_persister_mid_stream_loses_nothing(
        influx, broker, topics, persister, loop):
    """Kill the whole process group three times while records flow."""
    import random
    rnd = random.Random(11)
    with Feeder(broker, topics['metrics_topic']) as feeder:
        for _ in range(3):
            proc = persister(batch_size=500, extra=loop)
            before = sum(counts(influx, '"cpu.idle_perc"', 'value').values())
            wait_until(lambda before=before: sum(counts(
                influx, '"cpu.idle_perc"', 'value').values()) > before, 60,
                interval=0.2)
            time.sleep(rnd.uniform(0.5, 3))
            proc.kill()
    proc = persister(batch_size=500, extra=loop)
    assert_each_tenant_complete_and_alone(influx, feeder, proc)


def test_influxdb_down_twice_mid_stream_the_persister_rides_it_out(
        influx, broker, topics, persister):
    with Feeder(broker, topics['metrics_topic']) as feeder:
        proc = persister(batch_size=500)
        assert wait_until(lambda: counts(influx, '"cpu.idle_perc"',
                                         'value'), 60, interval=0.2)
        for _ in range(2):
            influx.restart_after(6)  # down for 6 s, same port
            time.sleep(3)
    assert_each_tenant_complete_and_alone(influx, feeder, proc)
    assert proc.alive(), proc.logtext()[-3000:]
    log = proc.logtext()
    assert 'retry' in log and 'Received signal' not in log


def test_one_tenants_permanent_errors_do_not_touch_the_others(
        influx, broker, topics, persister):
    # Someone wrote "value" as a string into tenant-two's database: every
    # point of ours there is a field type conflict, for good.
    influx.query('CREATE DATABASE "mon_tenant-two"')
    # (Field types are per shard: the point must share ours.)
    influx.write('mon_tenant-two', ['cpu.idle_perc,hostname=x value="text" %d'
                                    % NOW])
    wave = [records.encode(records.metric(t, timestamp=NOW - i, value=i))
            for i in range(100) for t in TENANTS]
    produce(broker, topics['metrics_topic'], wave)
    proc = persister(batch_size=50)
    ok = {'mon_' + t: 100 for t in TENANTS if t != 'tenant-two'}

    def others():
        got = counts(influx, '"cpu.idle_perc"', 'value')
        return {db: n for db, n in got.items() if db != 'mon_tenant-two'}
    assert wait_until(lambda: others() == ok, 60), proc.logtext()[-2000:]
    # An operator drops another tenant's database mid-run: it comes back.
    influx.query('DROP DATABASE "mon_tenant_3"')
    produce(broker, topics['metrics_topic'], [
        records.encode(records.metric(t, timestamp=NOW + 1 + i, value=i))
        for i in range(20) for t in TENANTS])
    ok = {'mon_a1b2c3d4e5f60718293a4b5c6d7e8f90': 120, 'mon_tenant_3': 20}
    assert wait_until(lambda: others() == ok, 60), proc.logtext()[-2000:]
    assert proc.alive()
    log = proc.logtext()
    assert 'field_type_conflict' in log and 'tenant-two' in log
    assert counts(influx, '"cpu.idle_perc"', 'value')['mon_tenant-two'] == 1


def test_a_down_server_delays_only_its_tenants_even_across_a_kill(
        influx, broker, topics, persister, tmp_path):
    """tenant-two lives on a second influxd that is down: the others keep
    being written; its points go to the spill, fsynced before their records
    are committed, so a SIGKILL of the persister meanwhile loses none of
    them (the next persister adopts what the killed one spilled)."""
    second = servers.InfluxServer(str(tmp_path / 'second')).start()
    second.stop()
    mapping = tmp_path / 'tenant-servers'
    mapping.write_text('tenant-two two\n')
    extra = ('servers = two:%s\ntenant_overrides_file = %s\nhold_after = 1\n'
             'retry_timeout = 5' % (second.url, mapping))
    others = ['mon_' + t for t in TENANTS if t != 'tenant-two']

    def written():
        got = counts(influx, '"cpu.idle_perc"', 'value')
        return [got.get(db, 0) for db in others]

    def grows(floor):
        return wait_until(lambda: min(written()) > floor, 60, interval=0.2)
    try:
        with Feeder(broker, topics['metrics_topic']) as feeder:
            proc = persister(batch_size=300, extra=extra)
            assert grows(600), proc.logtext()[-3000:]
            assert grows(min(written()) + 300), proc.logtext()[-3000:]
            assert wait_until(lambda: 'InfluxDB at %s is down: its points '
                              'go to' % second.url in proc.logtext(),
                              60), proc.logtext()[-3000:]
            proc.kill()  # what was in its memory is gone
            proc = persister(batch_size=300, extra=extra)
            assert grows(min(written()) + 300), proc.logtext()[-3000:]
            second.start()
        expected = feeder.expected()

        def total():
            got = counts(influx, '"cpu.idle_perc"', 'value')
            got.update(counts(second, '"cpu.idle_perc"', 'value'))
            return got
        wait_until(lambda: total() == expected, 120)
        assert total() == expected, proc.logtext()[-3000:]
        assert 'mon_tenant-two' not in influx.databases()
        assert proc.alive(), proc.logtext()[-3000:]
    finally:
        second.close()


def test_two_persisters_in_one_group_survive_each_others_restarts(
        influx, broker, topics, tmp_path):
    """An HA pair: one is restarted three times (each a group rebalance,
    which fails commits in flight); the other never exits, and every record
    lands once."""
    def start(name):
        return servers.Persister(influx, broker, str(tmp_path / name),
                                 batch_size=200, **topics).start()
    steady = start('steady')
    churn = []
    try:
        with Feeder(broker, topics['metrics_topic']) as feeder:
            assert wait_until(lambda: counts(influx, '"cpu.idle_perc"',
                                             'value'), 60, interval=0.2)
            for i in range(3):
                churn.append(start('churn%d' % i))
                time.sleep(8)  # joins: a rebalance
                churn[-1].stop()  # leaves: another one
                time.sleep(4)
                assert steady.alive(), steady.logtext()[-3000:]
        assert_each_tenant_complete_and_alone(influx, feeder, steady)
        assert steady.alive(), steady.logtext()[-3000:]
    finally:
        steady.stop()
        for proc in churn:
            proc.stop()
