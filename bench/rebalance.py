"""Adding a server, end to end: the real persister, then ``--rebalance``.

Starts ``--servers`` influxd (default 4) and tansu, runs monasca-persister
9.0.0 with our drivers and ``hash_servers`` over them, feeds ``--records``
records over ``--tenants`` tenants, then adds one more influxd: the
persister is restarted with it in ``[dbpt] servers`` and ``hash_servers``
(nothing else changes) while live records keep coming, and
``monasca-persister-dbpt-migrate --rebalance --drop-source`` runs as an
operator types it. Prints the tenants moved, the points moved, the time and
points/s of the rebalance, and checks afterwards that every moved tenant's
history is on the new server alone, complete.

    .venv/bin/python bench/rebalance.py
    .venv/bin/python bench/rebalance.py --tenants 2000 --records 600000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from bench.scratch import scratch_dir  # noqa: E402
from bench.persister_e2e import produce  # noqa: E402
from bench.servers_e2e import close_all, print_servers  # noqa: E402
from bench.servers_e2e import wait_written  # noqa: E402
from monasca_persister_dbpt.placement import Server  # noqa: E402
from monasca_persister_dbpt.placement.servers import ServerMap  # noqa: E402
from tests import records  # noqa: E402
from tests import servers  # noqa: E402


def _extra(names, influxes):
    return 'servers = %s\nhash_servers = %s' % (
        ','.join('%s:%s' % (n, s.url) for n, s in
                 zip(names[1:], influxes[1:])), ','.join(names))


def _points(influx, database):
    rows = influx.rows('SELECT count(value) FROM /.*/', database)
    return sum(r['count'] for r in rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--tenants', type=int, default=2000)
    parser.add_argument('--servers', type=int, default=4)
    parser.add_argument('--records', type=int, default=600000)
    parser.add_argument('--batch', type=int, default=20000)
    parser.add_argument('--workers', type=int, default=4,
                        help='--workers of the rebalance (moves in parallel)')
    args = parser.parse_args()
    work = scratch_dir('dbpt-rebalance-')
    influxes = [servers.InfluxServer(os.path.join(work, 'influx%d' % i))
                .start() for i in range(args.servers + 1)]
    old, added = influxes[:-1], influxes[-1]
    broker = servers.KafkaBroker(os.path.join(work, 'tansu')).start()
    stop = []
    try:
        broker.create_topic('metrics')
        broker.create_topic('alarm-state-transitions')
        names = ['default'] + ['s%d' % i for i in range(1, args.servers + 1)]
        tenants = ['%032x' % (0xba0000 + i) for i in range(args.tenants)]
        start_ms = int(time.time() * 1000) - 3 * 3600 * 1000
        history = records.metric_stream(args.records, tenants, start_ms,
                                        seed=3)
        first = servers.Persister(
            old[0], broker, os.path.join(work, 'p1'), batch_size=args.batch,
            max_wait=5, stats_interval=1,
            extra=_extra(names[:-1], old)).start()
        stop.append(first)
        produce(broker, 'metrics', history)
        wait_written(os.path.join(first.dir, 'stats.json.*'), len(history),
                     first)
        first.stop()
        print('%d tenants, %d records over %d influxd; adding server %d'
              % (args.tenants, args.records, args.servers, args.servers + 1))

        by_name = {n: Server('h%d' % i) for i, n in enumerate(names)}
        before = ServerMap(by_name['default'], by_name, None, names[:-1])
        after = ServerMap(by_name['default'], by_name, None, names)
        moved = [t for t in tenants
                 if before.server_for(t) != after.server_for(t)]
        moved_points = {t: None for t in moved}
        where = {s.url: s for s in old}
        url_of = dict(zip(names, (s.url for s in influxes)))
        for t in moved:
            source = where[url_of[[n for n, s in by_name.items()
                                   if s == before.server_for(t)][0]]]
            moved_points[t] = _points(source, 'mon_' + t)

        second = servers.Persister(
            old[0], broker, os.path.join(work, 'p2'), batch_size=args.batch,
            max_wait=5, stats_interval=1,
            extra=_extra(names, influxes)).start()
        stop.append(second)
        live_stop = threading.Event()
        live_sent = [0]

        def live():
            producer = broker.producer()
            i = 0
            while not live_stop.is_set():
                for _ in range(200):
                    producer.produce('metrics', records.encode(
                        records.metric(tenants[i % len(tenants)],
                                       dimensions={'hostname': 'live'},
                                       timestamp=int(time.time() * 1000),
                                       value=i)))
                    i += 1
                producer.poll(0)
                time.sleep(0.1)
            producer.flush(60)
            live_sent[0] = i
        feeder = threading.Thread(target=live)
        feeder.start()
        time.sleep(10)  # the new persister is writing the moved tenants

        exe = os.path.join(os.path.dirname(sys.executable),
                           'monasca-persister-dbpt-migrate')
        started = time.monotonic()
        run = subprocess.run(
            [exe, '--config-file', second.config, '--rebalance',
             '--drop-source', '--settle-seconds', '20', '--workers',
             str(args.workers), '--checkpoint',
             os.path.join(work, 'rebalance.jsonl')],
            capture_output=True, text=True)
        took = time.monotonic() - started
        live_stop.set()
        feeder.join()
        print('\n'.join(run.stdout.splitlines()[-3:]))
        if run.returncode != 0:
            raise RuntimeError('rebalance exit %d: %s' % (
                run.returncode, (run.stdout + run.stderr)[-2000:]))
        total = sum(moved_points.values())
        print('  moved %d of %d tenants (%.1f%%; 1/%d is %.1f%%), %d '
              'points, in %.1f s (40 s of it the two waits for readers): '
              '%.0f points/s' % (
                  len(moved), len(tenants), 100 * len(moved) / len(tenants),
                  args.servers + 1, 100 / (args.servers + 1), total, took,
                  total / max(took - 40, 0.001)))
        # Every moved tenant: on the new server alone, history complete.
        databases = {s.url: s.databases() for s in influxes}
        short = [t for t in moved
                 if any('mon_' + t in databases[s.url] for s in old) or
                 _points(added, 'mon_' + t) < moved_points[t]]
        print('  moved tenants not complete on the new server alone: %d'
              % len(short))
        print_servers(names, influxes)
        if short:
            raise RuntimeError('incomplete: %s' % short[:5])
    finally:
        close_all(stop, broker, influxes)


if __name__ == '__main__':
    main()
