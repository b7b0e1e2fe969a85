"""Many tenants over several influxd through the real persister.

Starts ``--servers`` influxd (default 4) and tansu, runs monasca-persister
9.0.0 with our drivers and ``hash_servers`` over all of them, and feeds one
point per tenant (the first flush: every tenant database is created) and
then ``--records`` records. Prints the first-flush time, records/s, the
tenants and RSS of each influxd, the worker's RSS, and how many tenants
adding one more server would move (rendezvous hashing: about 1/(n+1), all
to the new server).

    .venv/bin/python bench/servers_e2e.py
    .venv/bin/python bench/servers_e2e.py --tenants 2000 --servers 2
    .venv/bin/python bench/servers_e2e.py --tenants 10000 --servers 6 \
        --nofile 1048576

``--nofile`` raises each influxd's open-files limit as ``LimitNOFILE``
would (as far as this machine's hard limit lets: influxd 1.6 keeps 8
files open per database, its series file, and one or more per shard).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from bench.scratch import scratch_dir  # noqa: E402
from bench.persister_e2e import produce  # noqa: E402
from bench.soak import descendants, rss_kib, totals, written  # noqa: E402
from monasca_persister_dbpt.placement import Server  # noqa: E402
from monasca_persister_dbpt.placement.servers import ServerMap  # noqa: E402
from tests import records  # noqa: E402
from tests import servers  # noqa: E402


def wait_written(stats, n, persister, timeout=3600):
    deadline = time.monotonic() + timeout
    peak = 0
    while written(stats) < n:
        if time.monotonic() > deadline or not persister.alive():
            raise RuntimeError('not done: %s' % persister.logtext()[-1500:])
        peak = max(peak, sum(rss_kib(p) for p in
                             descendants(persister.proc.pid)))
        time.sleep(0.2)
    return peak


def print_servers(names, influxes) -> None:
    """Tenant databases, RSS and open files of each influxd."""
    for name, influx in zip(names, influxes):
        files, limit = influx.open_files()
        print('  influxd %-8s %5d databases, RSS %5.0f MiB, %d of %d files '
              'open' % (name, len(influx.databases() - {'_dbpt_moves'}),
                        rss_kib(influx.proc.pid) / 1024, files, limit))


def close_all(persisters, broker, influxes) -> None:
    for persister in persisters:
        persister.stop()
    broker.close()
    for influx in influxes:
        influx.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--tenants', type=int, default=4000)
    parser.add_argument('--servers', type=int, default=4)
    parser.add_argument('--records', type=int, default=300000)
    parser.add_argument('--batch', type=int, default=20000)
    parser.add_argument('--nofile', type=int, default=0,
                        help='open files each influxd may have (0: '
                             'inherited)')
    args = parser.parse_args()
    if args.tenants < 1 or args.servers < 1 or args.records < 1:
        parser.error('--tenants, --servers and --records must be >= 1')
    work = scratch_dir('dbpt-servers-')
    influxes = [servers.InfluxServer(os.path.join(work, 'influx%d' % i),
                                     nofile=args.nofile).start()
                for i in range(args.servers)]
    broker = servers.KafkaBroker(os.path.join(work, 'tansu')).start()
    stop = []
    try:
        broker.create_topic('metrics')
        broker.create_topic('alarm-state-transitions')
        names = ['default'] + ['s%d' % i for i in range(1, args.servers)]
        extra = 'servers = %s\nhash_servers = %s' % (
            ','.join('%s:%s' % (n, s.url) for n, s in
                     zip(names[1:], influxes[1:])), ','.join(names))
        tenants = ['%032x' % (0xca0000 + i) for i in range(args.tenants)]
        start_ms = int(time.time() * 1000) - 3 * 3600 * 1000
        warm = records.metric_stream(args.tenants, tenants,
                                     start_ms - 10 ** 6, seed=1, hosts=1,
                                     names=1)
        payloads = records.metric_stream(args.records, tenants, start_ms,
                                         seed=2)
        persister = servers.Persister(
            influxes[0], broker, os.path.join(work, 'persister'),
            batch_size=args.batch, max_wait=5, stats_interval=1,
            extra=extra).start()
        stats = os.path.join(persister.dir, 'stats.json.*')
        stop.append(persister)
        time.sleep(8)  # the group join, so the first flush is timed alone
        produce(broker, 'metrics', warm)
        started = time.monotonic()
        wait_written(stats, len(warm), persister)
        first = time.monotonic() - started
        time.sleep(1.5)  # one more stats report
        warm_requests = totals(stats).get('write_requests', 0)
        produce(broker, 'metrics', payloads)
        started = time.monotonic()
        peak = wait_written(stats, len(warm) + len(payloads), persister)
        took = time.monotonic() - started
        print('%d tenants over %d influxd, %d records, batch %d' % (
            args.tenants, args.servers, args.records, args.batch))
        print('  first flush (a database per tenant): %.1f s, %.0f '
              'databases/s' % (first, args.tenants / first))
        time.sleep(1.5)
        made = totals(stats).get('write_requests', 0) - warm_requests
        print('  records: %.0f/s, %.0f points per request; worker RSS peak '
              '%.0f MiB' % (len(payloads) / took, len(payloads) /
                            max(made, 1), peak / 1024))
        print_servers(names, influxes)
        persister.stop()
        # Adding one more server: who would move, and where to.
        by_name = {n: Server('h%d' % i) for i, n in enumerate(names)}
        before = ServerMap(by_name['default'], by_name, None, names)
        more = dict(by_name, new=Server('hnew'))
        after = ServerMap(by_name['default'], more, None, names + ['new'])
        moved = [t for t in tenants
                 if before.server_for(t) != after.server_for(t)]
        assert all(after.server_for(t) == more['new'] for t in moved)
        print('  adding a server %d would move %d tenants (%.1f%%; 1/%d is '
              '%.1f%%), all of them to it' % (
                  args.servers + 1, len(moved), 100 * len(moved) /
                  len(tenants), args.servers + 1, 100 / (args.servers + 1)))
    finally:
        close_all(stop, broker, influxes)


if __name__ == '__main__':
    main()
