"""The live cut-over of the seed README's FAQ, with the real persister.

The persister writes the shared database while the first pass runs;
db_per_tenant is switched on and the persister restarted while records keep
flowing; the delta pass runs; then every record ever produced is in its
tenant's database exactly once, and the source was left as it was.
"""

import threading
import time
import uuid

from tests import records
from tests import servers
from tests.functional.test_migration import migrate, snapshot
from tests.functional.test_persister_end_to_end import wait_until

TENANTS = ['live-a', 'live-b', 'live-c']
START = int(time.time() * 1000) - 3600 * 1000


class Feeder(threading.Thread):
    """Produces unique records (one series per host, distinct times)."""

    def __init__(self, broker, topic):
        super().__init__(daemon=True)
        self.broker, self.topic = broker, topic
        self.sent = {t: 0 for t in TENANTS}
        self.stop = threading.Event()

    def run(self):
        producer = self.broker.producer()
        seq = 0
        while not self.stop.is_set():
            for _ in range(50):
                tenant = TENANTS[seq % len(TENANTS)]
                producer.produce(self.topic, records.encode(records.metric(
                    tenant, dimensions={'hostname': 'h%d' % (seq % 7)},
                    timestamp=START + seq, value=seq)),
                    key=str(seq % 8).encode())
                self.sent[tenant] += 1
                seq += 1
            producer.poll(0)
            time.sleep(0.05)
        assert producer.flush(30) == 0


def _count(influx, db):
    rows = influx.rows('SELECT count(value) FROM "cpu.idle_perc"', db) \
        if db in influx.databases() else []
    return rows[0]['count'] if rows else 0


def test_live_cut_over_loses_nothing_and_copies_nothing_twice(
        influx, broker, tmp_path, persister_conf):
    suffix = uuid.uuid4().hex[:8]
    topic, group = 'metrics_' + suffix, 'g' + suffix
    broker.create_topic(topic)
    broker.create_topic('alarms_' + suffix)
    common = dict(metrics_topic=topic, alarms_topic='alarms_' + suffix,
                  group=group, batch_size=500, max_wait=1)
    shared = servers.Persister(influx, broker, str(tmp_path / 'p1'),
                               db_per_tenant=False, **common).start()
    feeder = Feeder(broker, topic)
    feeder.start()
    try:
        assert wait_until(lambda: _count(influx, 'mon') > 1000, 60)
        # First pass over everything, while the shared database grows.
        out = migrate(persister_conf, cwd=tmp_path, check=0).stdout
        assert 'MISMATCH' not in out
        # Switch db_per_tenant on and restart, records still flowing.
        shared.stop()
        per_tenant = servers.Persister(influx, broker, str(tmp_path / 'p2'),
                                       db_per_tenant=True, **common).start()
        time.sleep(4)
    finally:
        feeder.stop.set()
        feeder.join(30)
    try:
        total = sum(feeder.sent.values())
        assert per_tenant.alive(), per_tenant.logtext()[-2000:]
        source_before = snapshot(influx)
        # The delta pass: what reached the shared database after the first.
        out = migrate(persister_conf, cwd=tmp_path, check=0).stdout
        assert 'MISMATCH' not in out
        assert wait_until(lambda: all(
            _count(influx, 'mon_' + t) == feeder.sent[t] for t in TENANTS),
            60), ({t: _count(influx, 'mon_' + t) for t in TENANTS},
                  feeder.sent)
        time.sleep(2)
        for tenant in TENANTS:
            db = 'mon_' + tenant
            assert _count(influx, db) == feeder.sent[tenant]  # exactly once
            seen = {r['_tenant_id'] for r in influx.rows(
                'SELECT count(value) FROM "cpu.idle_perc" GROUP BY '
                '_tenant_id', db)}
            assert seen == {tenant}
        assert snapshot(influx) == source_before  # only ever read
        assert total > 2000
        assert per_tenant.alive(), per_tenant.logtext()[-2000:]
    finally:
        per_tenant.stop()
