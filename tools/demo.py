"""The main job end to end on local servers, for a first look.

Starts influxd and the tansu broker, runs the real monasca-persister 9.0.0
with this package's drivers, feeds sample metrics and alarm transitions for
three tenants (and a few hostile records), and prints each tenant's database.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from tests import hostile  # noqa: E402
from tests import records  # noqa: E402
from tests import servers  # noqa: E402

TENANTS = {'8a3f0c9e2b1d4e5fa6b7c8d9e0f1a2b3': 500, 'demo-project': 300,
           'ops_team': 200}


def main() -> int:
    work = tempfile.mkdtemp(prefix='dbpt-demo-')
    influx = servers.InfluxServer(os.path.join(work, 'influxd'))
    broker = servers.KafkaBroker(os.path.join(work, 'tansu'))
    persister = None
    try:
        influx.start()
        broker.start()
        print('influxd on %s, tansu on %s' % (influx.url, broker.bootstrap))
        broker.create_topic('metrics')
        broker.create_topic('alarm-state-transitions')
        now = int(time.time() * 1000)
        producer = broker.producer()
        for tenant, n in TENANTS.items():
            for i in range(n):
                producer.produce('metrics', records.encode(records.metric(
                    tenant, name='cpu.idle_perc' if i % 2 else 'mem.free_mb',
                    dimensions={'hostname': 'host-%d' % (i % 4)},
                    timestamp=now - i * 1000, value=float(i % 100))))
            producer.produce('alarm-state-transitions', records.encode(
                records.alarm(tenant, timestamp=now)))
        for topic, payload, _ in hostile.CORPUS[:6]:
            producer.produce(topic, payload)
        producer.flush(30)
        del producer
        persister = servers.Persister(influx, broker,
                                      os.path.join(work, 'persister'),
                                      batch_size=200, retention_hours=720,
                                      extra='retention_overrides = '
                                            'ops_team:2w')
        persister.start()
        print('monasca-persister started with [repositories] metrics_driver'
              ' = %s' % servers.OUR_METRICS)
        want = sum(TENANTS.values())
        deadline = time.monotonic() + 120
        total = 0
        while time.monotonic() < deadline:
            total = sum(_count(influx, db) for db in influx.databases())
            alarms = sum(_alarms(influx, db) for db in influx.databases())
            if total >= want and alarms >= len(TENANTS):
                break
            time.sleep(1)
        print('\nper-tenant databases on %s:' % influx.url)
        for db in sorted(influx.databases()):
            policies = influx.rows('SHOW RETENTION POLICIES ON "%s"' % db)
            tenants = {r['_tenant_id'] for r in influx.rows(
                'SHOW TAG VALUES WITH KEY = "_tenant_id"', db)
                for r in [{'_tenant_id': r['value']}]}
            print('  %-40s %5d metrics  %d alarm transitions  policy %s  '
                  'tenants seen %s' % (
                      db, _count(influx, db), _alarms(influx, db),
                      next(p['name'] for p in policies if p['default']),
                      sorted(tenants)))
        print('\nthe same, as an operator asks it (monasca-persister-dbpt-'
              'tenants list --config-file <persister.conf>):')
        sys.stdout.flush()
        subprocess.run([os.path.join(os.path.dirname(sys.executable),
                                     'monasca-persister-dbpt-tenants'),
                        '--config-file', persister.config, 'list', '-c',
                        'Tenant', '-c', 'Policies', '-c', 'Series', '-c',
                        'Disk bytes', '-c', 'Newest point'], timeout=120)
        refused = [line for line in persister.logtext().splitlines()
                   if 'refused ' in line]
        print('\n%d hostile records refused, for example:' % len(refused))
        for line in refused[:3]:
            print('  ' + line.split('] ', 1)[-1][:150])
        ok = total == sum(TENANTS.values())
        print('\n%s: %d of %d metrics stored' % ('OK' if ok else 'INCOMPLETE',
                                                 total, want))
        return 0 if ok else 1
    finally:
        if persister is not None:
            persister.stop()
        broker.close()
        influx.close()
        shutil.rmtree(work, ignore_errors=True)  # a demo leaves nothing


def _alarms(influx, db) -> int:
    rows = influx.rows('SELECT count(new_state) FROM alarm_state_history', db)
    return rows[0]['count'] if rows else 0


def _count(influx, db) -> int:
    rows = influx.rows('SELECT count(value) FROM /.*/', db)
    return sum(r['count'] for r in rows)


if __name__ == '__main__':
    sys.exit(main())
