"""Per-tenant limits: their cost on the write path, and their memory.

Every limit off against every limit on (rate, series cap, dimensions,
lengths, value_meta, future; set high enough that nothing is refused, so
both write the same points):

1. the driver's own time per record (``process_message``, in process, no
   server), the fastest of ``--repeat`` alternating passes over the same
   records: what the limits cost, without the noise of a server;
2. the host's loop (process_message, append, write_batch every ``--batch``
   records) against one real influxd, alternating, medians of records/s;
   the first pass of each driver (databases created, and for the limits a
   SHOW SERIES per tenant) is reported apart.

3. Memory: the series caps of 10,000 tenants (``--series`` each, and ten
   tenants at 100,000), under tracemalloc.

    .venv/bin/python bench/limits.py
    .venv/bin/python bench/limits.py --tenants 1,100 --records 50000
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from oslo_config import cfg  # noqa: E402

from monasca_persister_dbpt import conf as our_conf  # noqa: E402
from monasca_persister_dbpt.limits.series import SeriesCaps  # noqa: E402
from tests import records  # noqa: E402
from tests import servers  # noqa: E402

OFF = dict(max_name_length=0, max_dimension_length=0,
           max_value_meta_bytes=0)
ON = dict(ingestion_rate=1e9, max_series=1000000, max_dimensions=30,
          max_name_length=255, max_dimension_length=255,
          max_value_meta_bytes=2048, max_future_seconds=86400)


def driver(influx, limits):
    from monasca_persister_dbpt.repositories.metrics import MetricsRepository
    conf = cfg.ConfigOpts()
    our_conf.register_opts(conf)
    conf([], project='dbpt-bench', default_config_files=[])
    conf.set_override('ip_address', influx.host, 'influxdb')
    conf.set_override('port', influx.port, 'influxdb')
    conf.set_override('db_per_tenant', True, 'influxdb')
    for group, values in (('dbpt', dict(stats_interval=0, max_delay=0)),
                          ('dbpt', limits)):
        for name, value in values.items():
            conf.set_override(name, value, group)
    return MetricsRepository(conf)


def host_loop(repo, messages, batch_size):
    """(seconds in all, seconds in process_message + append)."""
    points = repo.data_points_class()
    start = time.perf_counter()
    own = 0.0
    for first in range(0, len(messages), batch_size):
        t0 = time.perf_counter()
        for message in messages[first:first + batch_size]:
            data_point, tenant_id = repo.process_message(message)
            points.append(tenant_id, data_point)
        own += time.perf_counter() - t0
        repo.write_batch(points)
        points.clear()
    return time.perf_counter() - start, own


def messages(n, tenants, start_ms):
    names = ['tenant%04d' % i for i in range(tenants)]
    return [records.Message(p) for p in
            records.metric_stream(n, names, start_ms)]


def cost(influx, args):
    print('%8s %11s %11s %6s %11s %11s %6s %12s' % (
        'tenants', 'off rec/s', 'on rec/s', 'cost', 'off us/rec',
        'on us/rec', 'cost', 'first pass'))
    base = int(time.time() * 1000) - 3600 * 1000
    for tenants in [int(t) for t in args.tenants.split(',')]:
        influx.drop_all()
        rate = {'off': [], 'on': []}
        per_record = {'off': [], 'on': []}
        first = {}
        repos = {'off': driver(influx, OFF), 'on': driver(influx, ON)}
        for name, repo in repos.items():  # first sight: databases, seeds
            base += tenants * 600 + 1
            first[name] = host_loop(repo, messages(
                tenants * 600, tenants, base), args.batch)[0]
        for round_ in range(args.repeat):
            # Alternate which goes first: influxd slows as data grows.
            order = list(repos.items())
            for name, repo in order if round_ % 2 == 0 else order[::-1]:
                base += args.records + 1
                took, own = host_loop(repo, messages(args.records, tenants,
                                                     base), args.batch)
                rate[name].append(args.records / took)
                per_record[name].append(own / args.records * 1e6)
        refused = {n: {k: v for k, v in r.stats.snapshot()['totals'].items()
                       if k.startswith('refused_')} for n, r in repos.items()}
        assert not any(refused.values()), refused
        med = {k: statistics.median(v) for k, v in rate.items()}
        us = {k: statistics.median(v) for k, v in per_record.items()}
        print('%8d %11.0f %11.0f %5.1f%% %11.2f %11.2f %5.1f%% %5.2f/%5.2fs' % (
            tenants, med['off'], med['on'], 100 * (1 - med['on'] / med['off']),
            us['off'], us['on'], 100 * (us['on'] / us['off'] - 1),
            first['off'], first['on']))
        sys.stdout.flush()


def driver_cpu(args):
    """(1): us per record, fastest pass, limits off and on."""
    class Nowhere:  # no server: nothing is written, no series counted
        host, port = '127.0.0.1', 9
    print('driver time per record (process_message, fastest of %d):'
          % args.repeat)
    print('%8s %10s %10s %7s' % ('tenants', 'off us', 'on us', 'cost'))
    base = int(time.time() * 1000) - 3600 * 1000
    for tenants in [int(t) for t in args.tenants.split(',')]:
        msgs = messages(args.records, tenants, base)
        repos = {'off': driver(Nowhere, OFF), 'on': driver(Nowhere, ON)}
        repos['on'].limits.series._seed = None
        best = {}
        for round_ in range(args.repeat + 1):
            order = list(repos.items())
            for name, repo in order if round_ % 2 == 0 else order[::-1]:
                start = time.perf_counter()
                for message in msgs:
                    repo.process_message(message)
                took = (time.perf_counter() - start) / len(msgs) * 1e6
                if round_:  # the first pass fills the caches
                    best[name] = min(best.get(name, took), took)
        print('%8d %10.2f %10.2f %6.1f%%' % (
            tenants, best['off'], best['on'],
            100 * (best['on'] / best['off'] - 1)))
        sys.stdout.flush()


def memory(args):
    import tracemalloc
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    caps = SeriesCaps(budget_bytes=1 << 40)
    start = time.perf_counter()
    for tenant in range(10000):
        for i in range(args.series):
            caps.admit('t%05d' % tenant, 'cpu,_tenant_id=t%05d,host=h%d'
                       % (tenant, i), 100000)
    for tenant in range(10):
        for i in range(100000):
            caps.admit('big%d' % tenant, 'cpu,_tenant_id=big,host=h%d' % i,
                       100000)
    took = time.perf_counter() - start
    total = 10000 * args.series + 10 * 100000
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    print('\nseries caps: 10,000 tenants x %d series + 10 x 100,000 = %d '
          'series: filters %.1f MiB (%.2f bytes/series), all of it %.1f MiB '
          '(%.0f bytes per tenant besides the filters), %.1f us per new '
          'series (under tracemalloc)' % (
              args.series, total, caps.nbytes / 2 ** 20,
              caps.nbytes / total, held / 2 ** 20,
              (held - caps.nbytes) / 10010, took / total * 1e6))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--records', type=int, default=100000)
    parser.add_argument('--batch', type=int, default=20000,
                        help='[kafka_metrics] batch_size (default 20000)')
    parser.add_argument('--tenants', default='1,100,1000')
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--series', type=int, default=100,
                        help='series per tenant for the memory part')
    parser.add_argument('--skip-influx', action='store_true')
    parser.add_argument('--skip-memory', action='store_true')
    args = parser.parse_args()
    driver_cpu(args)
    if not args.skip_influx:
        influx = servers.InfluxServer().start()
        try:
            print('\nhost loop on influxd %s; %d records per run, batch %d, '
                  '%d repeats, coalescing off' % (
                      influx.url, args.records, args.batch, args.repeat))
            cost(influx, args)
        finally:
            influx.close()
    if not args.skip_memory:
        memory(args)


if __name__ == '__main__':
    main()
