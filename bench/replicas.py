"""Replicas: records/s through the real persister with ``replicas = 1``
and ``replicas = 2`` on the same three influxd, and ``--repair``'s speed
rebuilding a replica that lost its databases.

For each tenant count, for R = 1 then R = 2 (fresh influxd each time):
one point per tenant (every database created), then ``--records``
records; records/s is timed from the first record produced to the last
point written to every replica. Then, for R = 2, every tenant database on
one server is dropped and ``monasca-persister-dbpt-migrate --repair``
rebuilds them from the other replicas: points/s copied and verified.

    .venv/bin/python bench/replicas.py
    .venv/bin/python bench/replicas.py --tenants 100,1000 --records 200000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from bench.scratch import scratch_dir  # noqa: E402
from bench.persister_e2e import produce  # noqa: E402
from bench.servers_e2e import close_all, wait_written  # noqa: E402
from bench.soak import children  # noqa: E402
from tests import records  # noqa: E402
from tests import servers  # noqa: E402

SCRIPT = os.path.join(os.path.dirname(sys.executable),
                      'monasca-persister-dbpt-migrate')


def cpu_s(pid: int) -> float:
    """User plus system CPU seconds of a process so far."""
    try:
        with open('/proc/%d/stat' % pid) as handle:
            fields = handle.read().rsplit(')', 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def run(tenant_count: int, replicas: int, n_records: int, batch: int,
        repair: bool) -> dict:
    work = scratch_dir('dbpt-replicas-')
    influxes = [servers.InfluxServer(os.path.join(work, 'influx%d' % i))
                .start() for i in range(3)]
    broker = servers.KafkaBroker(os.path.join(work, 'tansu')).start()
    stop = []
    out = {}
    try:
        broker.create_topic('metrics')
        broker.create_topic('alarm-state-transitions')
        names = ['default', 's1', 's2']
        extra = 'servers = %s\nhash_servers = %s\nreplicas = %d' % (
            ','.join('%s:%s' % (n, s.url) for n, s in
                     zip(names[1:], influxes[1:])), ','.join(names),
            replicas)
        tenants = ['%032x' % (0xbe0000 + i) for i in range(tenant_count)]
        start_ms = int(time.time() * 1000) - 3 * 3600 * 1000
        warm = records.metric_stream(tenant_count, tenants,
                                     start_ms - 10 ** 6, seed=1, hosts=1,
                                     names=1)
        payloads = records.metric_stream(n_records, tenants, start_ms,
                                         seed=2)
        persister = servers.Persister(
            influxes[0], broker, os.path.join(work, 'persister'),
            batch_size=batch, max_wait=5, stats_interval=1,
            extra=extra).start()
        stop.append(persister)
        stats = os.path.join(persister.dir, 'stats.json.*')
        time.sleep(8)  # the group join, so the first flush is timed alone
        produce(broker, 'metrics', warm)
        wait_written(stats, replicas * len(warm), persister)
        workers = children(persister.proc.pid)
        cpu_before = (sum(cpu_s(p) for p in workers),
                      sum(cpu_s(i.proc.pid) for i in influxes))
        started = time.monotonic()
        produce(broker, 'metrics', payloads)
        peak = wait_written(stats, replicas * (len(warm) + len(payloads)),
                            persister)
        took = time.monotonic() - started
        out['persister_cpu_us'] = 1e6 * (sum(cpu_s(p) for p in workers) -
                                         cpu_before[0]) / len(payloads)
        out['influxd_cpu_us'] = 1e6 * (sum(cpu_s(i.proc.pid) for i in
                                           influxes) - cpu_before[1]) / \
            len(payloads)
        out['records_per_s'] = len(payloads) / took
        out['rss_mib'] = peak / 1024
        persister.stop()
        if repair:
            victim = influxes[1]
            lost = 0
            for db in sorted(victim.databases()):
                if db.startswith('mon_'):
                    rows = victim.rows('SELECT count(value) FROM /.*/', db)
                    lost += sum(r.get('count', 0) for r in rows)
                    victim.query('DROP DATABASE "%s"' % db)
            started = time.monotonic()
            done = subprocess.run(
                [SCRIPT, '--config-file', persister.config, '--repair',
                 '--settle-seconds', '0', '--workers', '4'],
                capture_output=True, text=True, cwd=work)
            took = time.monotonic() - started
            if done.returncode != 0:
                raise RuntimeError(done.stdout[-2000:] + done.stderr[-2000:])
            out['repair_points'] = lost
            out['repair_s'] = took
    finally:
        close_all(stop, broker, influxes)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--tenants', default='100,1000')
    parser.add_argument('--records', type=int, default=200000)
    parser.add_argument('--batch', type=int, default=1000)
    args = parser.parse_args()
    print('%d records, batch %d, three influxd, the real persister'
          % (args.records, args.batch))
    for count in [int(t) for t in args.tenants.split(',')]:
        one = run(count, 1, args.records, args.batch, repair=False)
        two = run(count, 2, args.records, args.batch, repair=True)
        print('  %5d tenants: R=1 %7.0f records/s (RSS %.0f MiB), R=2 %7.0f '
              'records/s (RSS %.0f MiB): %.0f%% of R=1' % (
                  count, one['records_per_s'], one['rss_mib'],
                  two['records_per_s'], two['rss_mib'],
                  100 * two['records_per_s'] / one['records_per_s']))
        print('         CPU per record: persister %.0f/%.0f us, influxd '
              '%.0f/%.0f us (R=1/R=2)' % (
                  one['persister_cpu_us'], two['persister_cpu_us'],
                  one['influxd_cpu_us'], two['influxd_cpu_us']))
        print('         repair of one server (%d points, every database '
              'dropped): %.1f s, %.0f points/s' % (
                  two['repair_points'], two['repair_s'],
                  two['repair_points'] / two['repair_s']))


if __name__ == '__main__':
    main()
