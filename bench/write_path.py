"""Write-path benchmark: our metrics driver vs upstream's, and the ceiling.

Both drivers get the same generated Kafka records and run the host's loop
(process_message, append, write_batch every ``--batch`` records) against
the same influxd, in alternating runs; the ceiling POSTs the same line
protocol straight to /write in ``[influxdb] batch_size`` chunks over one and
two connections. Prints messages/s (medians) and ratios per tenant count,
then the first flush over brand-new tenant databases.

    .venv/bin/python bench/write_path.py            # 200,000 records
    .venv/bin/python bench/write_path.py --records 50000 --tenants 1,100
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import statistics
import sys
import time

import requests

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from oslo_config import cfg  # noqa: E402

from tests import records  # noqa: E402
from tests import servers  # noqa: E402


def configure(influx, write_concurrency, pipeline_points):
    from monasca_persister import conf as host_conf
    from monasca_persister_dbpt import conf as our_conf
    host_conf.register_opts()
    our_conf.register_opts(cfg.CONF)
    cfg.CONF([], project='dbpt-bench', default_config_files=[])
    cfg.CONF.set_override('ip_address', influx.host, 'influxdb')
    cfg.CONF.set_override('port', influx.port, 'influxdb')
    cfg.CONF.set_override('db_per_tenant', True, 'influxdb')
    cfg.CONF.set_override('stats_interval', 0, 'dbpt')
    cfg.CONF.set_override('write_concurrency', write_concurrency, 'dbpt')
    cfg.CONF.set_override('coalesce_points', pipeline_points, 'dbpt')
    cfg.CONF.set_override('max_delay', 0, 'dbpt')  # the host loop's own flushes


def ours():
    from monasca_persister_dbpt.repositories.metrics import MetricsRepository
    return MetricsRepository()


def upstream():
    from monasca_persister.repositories.influxdb.metrics_repository import \
        MetricInfluxdbRepository
    return MetricInfluxdbRepository()


def cpu_seconds(pid):
    """User + system CPU seconds a process has used (Linux /proc)."""
    with open('/proc/%d/stat' % pid) as handle:
        fields = handle.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def measured(influx, func, *args):
    """(seconds, influxd CPU seconds, this process's CPU seconds)."""
    server0, own0 = cpu_seconds(influx.proc.pid), time.process_time()
    took = func(*args)
    return (took, cpu_seconds(influx.proc.pid) - server0,
            time.process_time() - own0)


def host_loop(repo, messages, batch_size):
    """What monasca-persister's Persister.run does per message and flush."""
    points = repo.data_points_class()
    start = time.perf_counter()
    for message in messages:
        data_point, tenant_id = repo.process_message(message)
        points.append(tenant_id, data_point)
        if points.get_count() >= batch_size:
            repo.write_batch(points)
            points.clear()
    if points.get_count():
        repo.write_batch(points)
        points.clear()
    return time.perf_counter() - start


def make_messages(n, tenants, start_ms, first_offset=0):
    names = ['tenant%04d' % i for i in range(tenants)]
    return [records.Message(p, first_offset + i) for i, p in
            enumerate(records.metric_stream(n, names, start_ms))]


def ceiling(influx, flushes, chunk, connections):
    """POST pre-built bodies: per flush, per database, in chunks."""
    sessions = [requests.Session() for _ in range(connections)]

    def post(job):
        index, db, body = job
        r = sessions[index % connections].post(
            influx.url + '/write', data=body,
            params={'db': db, 'precision': 'ms'})
        assert r.status_code == 204, r.text
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(connections) as pool:
        for jobs in flushes:  # the flushes follow one another, like the host
            list(pool.map(post, jobs))
    return time.perf_counter() - start


def flushes_for(repo, messages, batch_size, chunk):
    """The requests the host's flushes make: per batch, per tenant, chunked."""
    flushes = []
    for start in range(0, len(messages), batch_size):
        by_db = {}
        for message in messages[start:start + batch_size]:
            line, tenant = repo.process_message(message)
            by_db.setdefault('mon_' + tenant, []).append(line)
        flushes.append([
            (n, db, '\n'.join(lines[i:i + chunk]).encode())
            for n, (db, lines) in enumerate(by_db.items())
            for i in range(0, len(lines), chunk)])
    return flushes


def floor(influx, base):
    """What influxd itself needs to create 1000 databases and their first
    shard groups, without any driver."""
    influx.drop_all()
    session = requests.Session()
    start = time.perf_counter()
    for first in (0, 500):
        session.post(influx.url + '/query', data={'q': ';'.join(
            'CREATE DATABASE "floor_%04d"' % i
            for i in range(first, first + 500))})
    created = time.perf_counter() - start

    def first_write(i):
        s = requests.Session()
        for j in range(i, 1000, 4):
            s.post(influx.url + '/write', data='m,a=b value=1 %d' % base,
                   params={'db': 'floor_%04d' % j, 'precision': 'ms'})
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(first_write, range(4)))
    print('  influxd floor: create 1000 databases %.2f s (2 requests), first'
          ' point into each %.2f s (4 connections)'
          % (created, time.perf_counter() - start))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--records', type=int, default=200000)
    parser.add_argument('--batch', type=int, default=20000,
                        help='[kafka_metrics] batch_size (default 20000)')
    parser.add_argument('--tenants', default='1,10,100,1000')
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--write-concurrency', type=int, default=4)
    parser.add_argument('--pipeline-points', type=int, default=5000)
    parser.add_argument('--skip-first-flush', action='store_true')
    args = parser.parse_args()

    influx = servers.InfluxServer().start()
    try:
        configure(influx, args.write_concurrency, args.pipeline_points)
        chunk = cfg.CONF.influxdb.batch_size
        print('influxd %s; %d records, batch %d, chunk %d, %d repeats, '
              'write_concurrency %d' % (influx.url, args.records, args.batch,
                                        chunk, args.repeat,
                                        args.write_concurrency))
        print('%8s %10s %10s %6s %10s %10s %7s %7s' % (
            'tenants', 'ours/s', 'upstrm/s', 'ratio', 'ceil1/s', 'ceil2/s',
            '%ceil1', '%ceil2'))
        base = int(time.time() * 1000) - 3600 * 1000
        for tenants in [int(t) for t in args.tenants.split(',')]:
            results = {'ours': [], 'upstream': [], 'c1': [], 'c2': []}
            cpu = {k: [] for k in results}
            # Warm up: databases exist, as in a running system.
            host_loop(ours(), make_messages(tenants, tenants, base),
                      args.batch)
            for _ in range(args.repeat):
                for name, factory in (('ours', ours), ('upstream', upstream)):
                    base += args.records + 1
                    msgs = make_messages(args.records, tenants, base)
                    took, server, own = measured(influx, host_loop, factory(),
                                                 msgs, args.batch)
                    results[name].append(args.records / took)
                    cpu[name].append((server / took, own / took))
                for key, connections in (('c1', 1), ('c2', 2)):
                    base += args.records + 1
                    flushes = flushes_for(ours(), make_messages(
                        args.records, tenants, base), args.batch, chunk)
                    took, server, own = measured(influx, ceiling, influx,
                                                 flushes, chunk, connections)
                    results[key].append(args.records / took)
                    cpu[key].append((server / took, own / took))
            med = {k: statistics.median(v) for k, v in results.items()}
            print('%8d %10.0f %10.0f %5.2fx %10.0f %10.0f %6.0f%% %6.0f%%' % (
                tenants, med['ours'], med['upstream'],
                med['ours'] / med['upstream'], med['c1'], med['c2'],
                100 * med['ours'] / med['c1'], 100 * med['ours'] / med['c2']))
            print('%8s cores busy (influxd+client): ' % '' + '  '.join(
                '%s %.2f+%.2f' % (k, statistics.median(a for a, _ in v),
                                  statistics.median(b for _, b in v))
                for k, v in cpu.items()))
            sys.stdout.flush()
        if not args.skip_first_flush:
            print('\nfirst flush over 1000 new tenant databases '
                  '(%d records):' % args.batch)
            for name, factory in (('ours', ours), ('upstream', upstream)):
                influx.drop_all()
                base += args.batch + 1
                msgs = make_messages(args.batch, 1000, base)
                took = host_loop(factory(), msgs, args.batch)
                print('  %-9s %6.2f s' % (name, took))
            floor(influx, base)
    finally:
        influx.close()


if __name__ == '__main__':
    main()
