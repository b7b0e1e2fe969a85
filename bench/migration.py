"""Migration benchmark: our console script vs upstream's script, and the ceiling.

Seeds a shared database (default 20 measurements x 20 tenants x 2500 points
over 8 weeks: 1,000,000 points), then times, on the same influxd, with the
target databases dropped between runs:

- ours, tight range (--migrate-end-time-offset 9) and the default (520 weeks),
  each followed by --verify-only (timed apart);
- upstream's migrate-to-db-per-tenant.py from the monasca-persister 9.0.0
  wheel, run as its README says, on the tight range (and the default range
  with --upstream-default: minutes);
- the ceiling: one whole-range SELECT INTO per tenant, serial and two in
  parallel.

    .venv/bin/python bench/migration.py
    .venv/bin/python bench/migration.py --tenants 5 --measurements 5 --points 400
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import subprocess
import sys
import tempfile
import time

import requests

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from bench.scratch import scratch_dir  # noqa: E402
from tests import servers  # noqa: E402

WEEK_MS = 7 * 86400 * 1000


def seed(influx, measurements, tenants, points, weeks):
    influx.query('CREATE DATABASE mon')
    now = int(time.time() * 1000) - 60000
    step = weeks * WEEK_MS // points
    session = requests.Session()
    for m in range(measurements):
        lines = []
        for t in range(tenants):
            for i in range(points):
                lines.append('metric.%02d,_region=r1,_tenant_id=tenant%02d,'
                             'hostname=h%d value=%d,value_meta="{}" %d'
                             % (m, t, i % 4, i, now - i * step))
        for start in range(0, len(lines), 20000):
            r = session.post(influx.url + '/write', params={
                'db': 'mon', 'precision': 'ms'},
                data='\n'.join(lines[start:start + 20000]).encode())
            assert r.status_code == 204, r.text
    return measurements * tenants * points


def drop_targets(influx):
    for db in influx.databases() - {'mon'}:
        influx.query('DROP DATABASE "%s"' % db)


def timed(cmd, cwd):
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        print(proc.stdout[-2000:], proc.stderr[-2000:])
        raise SystemExit('command failed: %s' % ' '.join(cmd))
    return took


def ceiling(influx, tenants, parallel):
    def one(t):
        r = requests.post(influx.url + '/query', params={'db': 'mon'}, data={'q': (
            'SELECT * INTO "mon_tenant%02d"..:MEASUREMENT FROM "mon"../.*/ '
            'WHERE "_tenant_id" = \'tenant%02d\' GROUP BY *' % (t, t))})
        assert r.status_code == 200 and 'error' not in r.text, r.text
    for t in range(tenants):
        requests.post(influx.url + '/query',
                      data={'q': 'CREATE DATABASE "mon_tenant%02d"' % t})
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, range(tenants)))
    return time.perf_counter() - start


def upstream_script():
    import monasca_persister
    return os.path.join(os.path.dirname(monasca_persister.__file__), 'tools',
                        'influxdb', 'db-per-tenant',
                        'migrate-to-db-per-tenant.py')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--measurements', type=int, default=20)
    parser.add_argument('--tenants', type=int, default=20)
    parser.add_argument('--points', type=int, default=2500,
                        help='per measurement and tenant')
    parser.add_argument('--weeks', type=int, default=8)
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--upstream-default', action='store_true',
                        help='also time upstream over its default 520 weeks')
    args = parser.parse_args()

    work = scratch_dir('dbpt-bench-migrate-')
    influx = servers.InfluxServer(os.path.join(work, 'influxd')).start()
    try:
        conf = os.path.join(work, 'persister.conf')
        with open(conf, 'w') as handle:
            handle.write('[DEFAULT]\nlog_file = %s\n[influxdb]\n'
                         'database_name = mon\ndb_per_tenant = True\n'
                         'ip_address = %s\nport = %d\n'
                         % (os.path.join(work, 'migrate.log'), influx.host,
                            influx.port))
        total = seed(influx, args.measurements, args.tenants, args.points,
                     args.weeks)
        print('influxd %s; seeded %d points (%d measurements x %d tenants x '
              '%d) over %d weeks' % (influx.url, total, args.measurements,
                                     args.tenants, args.points, args.weeks))
        bindir = os.path.dirname(sys.executable)
        ours = os.path.join(bindir, 'monasca-persister-dbpt-migrate')
        rows = []

        def run(name, cmd, verify=None):
            drop_targets(influx)
            cwd = tempfile.mkdtemp(dir=work)
            took = timed(cmd, cwd)
            extra = ''
            if verify:
                extra = '  verify %.1f s' % timed(verify, cwd)
            rows.append((name, took))
            print('%-34s %7.1f s %9.0f points/s%s' % (name, took,
                                                      total / took, extra))
            sys.stdout.flush()

        base = [ours, '--config-file', conf, '--workers', str(args.workers)]
        verify = [ours, '--config-file', conf, '--verify-only']
        run('ours, tight (end offset 9)',
            base + ['--migrate-end-time-offset', '9'],
            verify + ['--migrate-end-time-offset', '9'])
        run('ours, default range (520 w)', base, verify)
        script = upstream_script()
        run('upstream, tight (end offset 9)',
            [sys.executable, script, '--config-file', conf,
             '--migrate-end-time-offset', '9'])
        if args.upstream_default:
            run('upstream, default range (520 w)',
                [sys.executable, script, '--config-file', conf])
        for parallel in (1, 2):
            drop_targets(influx)
            took = ceiling(influx, args.tenants, parallel)
            rows.append(('ceiling x%d' % parallel, took))
            print('%-34s %7.1f s %9.0f points/s' % (
                'ceiling, whole range, %d parallel' % parallel, took,
                total / took))
        times = dict(rows)
        print('\nours tight vs two-parallel ceiling: %.0f%% of its points/s; '
              'default range costs %+.0f%% over tight; ours vs upstream '
              '(tight): %.2fx' % (
                  100 * times['ceiling x2'] /
                  times['ours, tight (end offset 9)'],
                  100 * (times['ours, default range (520 w)'] /
                         times['ours, tight (end offset 9)'] - 1),
                  times['upstream, tight (end offset 9)'] /
                  times['ours, tight (end offset 9)']))
    finally:
        influx.close()


if __name__ == '__main__':
    main()
