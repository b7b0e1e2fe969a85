"""A down server delays only its tenants: what it costs, in time and memory.

Two influxd processes; every tenth tenant is placed on the second. The
host's loop (bench/write_path.py) runs the same number of records three
times: both servers up; the second one down (its points spilled to disk,
or with ``--no-spill`` held in memory, after one warm-up batch that pays
``[dbpt] hold_after``); and, with the second server back, how fast what
waited is replayed. Prints records/s of each run, the memory (or disk)
per waiting point, and the replay rate.

    .venv/bin/python bench/down_server.py                # 200,000 records
    .venv/bin/python bench/down_server.py --no-spill     # held in memory
    .venv/bin/python bench/down_server.py --records 50000
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from bench.scratch import scratch_dir  # noqa: E402
from oslo_config import cfg  # noqa: E402

from bench.write_path import configure, host_loop, make_messages  # noqa: E402
from tests import servers  # noqa: E402


def rss_mib() -> float:
    with open('/proc/self/status') as handle:
        for line in handle:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    return 0.0


def held_bytes(buffers) -> float:
    """Bytes of the held lines and the lists holding them, per point."""
    total = points = 0
    for tenant in list(buffers._held_tenants):
        lines = buffers._buffers[tenant].lines
        total += sys.getsizeof(lines) + sum(map(sys.getsizeof, lines))
        points += len(lines)
    return total / max(points, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--records', type=int, default=200000)
    parser.add_argument('--tenants', type=int, default=100)
    parser.add_argument('--batch', type=int, default=20000)
    parser.add_argument('--every', type=int, default=10,
                        help='every Nth tenant is on the second server')
    parser.add_argument('--no-spill', action='store_true',
                        help='hold the down server\'s points in memory')
    args = parser.parse_args()

    work = scratch_dir('dbpt-bench-down-')
    first = servers.InfluxServer(os.path.join(work, 'one')).start()
    second = servers.InfluxServer(os.path.join(work, 'two')).start()
    try:
        names = ['tenant%04d' % i for i in range(args.tenants)]
        mapping = os.path.join(work, 'tenant-servers')
        with open(mapping, 'w') as handle:
            handle.writelines('%s two\n' % t for t in names[::args.every])
        configure(first, 4, 5000)
        cfg.CONF.set_override('servers', {'two': second.url}, 'dbpt')
        cfg.CONF.set_override('tenant_overrides_file', mapping, 'dbpt')
        cfg.CONF.set_override('held_points_max', args.records * 2, 'dbpt')
        cfg.CONF.set_override('spill_dir', '' if args.no_spill else
                              os.path.join(work, 'spill'), 'dbpt')
        from monasca_persister_dbpt.repositories.metrics import \
            MetricsRepository
        repo = MetricsRepository()
        start = int(time.time() * 1000) - 10 ** 8
        up = make_messages(args.records, args.tenants, start)
        warm = make_messages(args.batch, args.tenants, start + 10 ** 7)
        down = make_messages(args.records, args.tenants, start + 2 * 10 ** 7)
        host_loop(repo, warm[:args.tenants * 10], args.batch)  # databases

        took_up = host_loop(repo, up, args.batch)
        second.stop()
        took_warm = host_loop(repo, warm, args.batch)
        gc.collect()
        spill = repo.buffers.spill

        def waiting():
            return repo.buffers.held() + sum(
                w['points'] for w in spill.waiting().values()) \
                if spill else repo.buffers.held()
        rss0, held0 = rss_mib(), waiting()
        disk0 = spill.used_bytes if spill else 0
        took_down = host_loop(repo, down, args.batch)
        gc.collect()
        rss1, held1 = rss_mib(), waiting()
        disk1 = spill.used_bytes if spill else 0
        sizes = held_bytes(repo.buffers)
        second.start()
        t0 = time.perf_counter()
        while repo.buffers.holding() or (spill and spill.used_bytes):
            time.sleep(0.05)
        took_replay = time.perf_counter() - t0

        n = args.records
        print('records per run: %d over %d tenants, %d on the second server'
              % (n, args.tenants, len(names[::args.every])))
        print('both servers up:        %8.0f records/s' % (n / took_up))
        print('second server down:     %8.0f records/s  (%.0f%% of up; '
              '%d points %s)' % (n / took_down, 100 * took_up / took_down,
                                 held1 - held0, 'spilled, committed' if spill
                                 else 'held in memory'))
        if spill:
            print('spill on disk:          %8.0f bytes per point'
                  % ((disk1 - disk0) / max(held1 - held0, 1)))
        print('first batch after the server went away: %.1f s (%d records; '
              'includes [dbpt] hold_after = %.0f s)'
              % (took_warm, len(warm), cfg.CONF.dbpt.hold_after))
        print('memory per held point:  %8.0f bytes (RSS %+.1f MiB for %d '
              'points)' % ((rss1 - rss0) * 2 ** 20 / max(held1 - held0, 1),
                           rss1 - rss0, held1 - held0))
        print('held objects:           %8.0f bytes per point (lines and '
              'their lists, sys.getsizeof)' % sizes)
        print('replay after it came back: %d points in %.1f s (%.0f '
              'points/s, from the start of influxd)'
              % (held1, took_replay, held1 / max(took_replay, 1e-9)))
    finally:
        first.close()
        second.close()


if __name__ == '__main__':
    main()
