"""Soak: millions of records across many tenants through the real persister.

Starts influxd and tansu, produces the records, runs monasca-persister 9.0.0
with our drivers (host defaults: batch 20,000) and samples every 5 s: points
written (from the workers' stats files), the worker's resident memory. Prints
throughput per minute, peak RSS, RSS per minute, and checks every tenant's
count at the end.

    .venv/bin/python bench/soak.py                       # 2,000,000 x 1000
    .venv/bin/python bench/soak.py --records 200000 --tenants 100
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from bench.scratch import scratch_dir  # noqa: E402
from tests import records  # noqa: E402
from tests import servers  # noqa: E402


def rss_kib(pid: int) -> int:
    try:
        with open('/proc/%d/status' % pid) as handle:
            for line in handle:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    try:
        with open('/proc/%d/task/%d/children' % (pid, pid)) as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


def descendants(pid: int) -> list[int]:
    """Children, theirs, and so on: the workers and what they started (a
    worker's write process, [dbpt] write_process)."""
    found, look = [], [pid]
    while look:
        for child in children(look.pop()):
            found.append(child)
            look.append(child)
    return found


def snapshots(stats_glob: str) -> list:
    """The workers' stats files, read (a file being rewritten is skipped:
    it is read again at the next look)."""
    out = []
    for path in glob.glob(stats_glob):
        if path.endswith('.tmp'):
            continue
        try:
            with open(path) as handle:
                out.append(json.load(handle))
        except (OSError, ValueError):
            pass
    return out


def totals(stats_glob: str) -> dict:
    """The workers' stats files' totals, summed."""
    out: dict = {}
    for snap in snapshots(stats_glob):
        for key, value in snap.get('totals', {}).items():
            out[key] = out.get(key, 0) + value
    return out


def written(stats_glob: str) -> int:
    return totals(stats_glob).get('points_written', 0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--records', type=int, default=2_000_000)
    parser.add_argument('--tenants', type=int, default=1000)
    parser.add_argument('--batch', type=int, default=20000)
    args = parser.parse_args()

    work = scratch_dir('dbpt-soak-')
    influx = servers.InfluxServer(os.path.join(work, 'influxd')).start()
    broker = servers.KafkaBroker(os.path.join(work, 'tansu')).start()
    persister = None
    try:
        broker.create_topic('metrics')
        broker.create_topic('alarm-state-transitions')
        tenants = ['%032x' % (0xabc000 + i) for i in range(args.tenants)]
        start_ms = int(time.time() * 1000) - 3600 * 1000
        print('producing %d records for %d tenants ...' % (args.records,
                                                          args.tenants))
        producer = broker.producer()
        step = 100_000
        for first in range(0, args.records, step):
            for payload in records.metric_stream(
                    min(step, args.records - first), tenants,
                    start_ms + first, seed=first):
                while True:
                    try:
                        producer.produce('metrics', payload)
                        break
                    except BufferError:
                        producer.poll(0.1)
            producer.poll(0)
        producer.flush(120)
        del producer
        persister = servers.Persister(
            influx, broker, os.path.join(work, 'persister'),
            batch_size=args.batch, max_wait=5, stats_interval=5)
        persister.start()
        started = time.monotonic()
        samples = []   # (seconds, written, rss KiB)
        stats_glob = os.path.join(persister.dir, 'stats.json.*')
        done = threading.Event()
        while not done.is_set():
            time.sleep(5)
            workers = children(persister.proc.pid)
            rss = sum(rss_kib(p) for p in workers)
            n = written(stats_glob)
            samples.append((time.monotonic() - started, n, rss))
            print('  %5.0f s  %9d written  worker RSS %6.1f MiB'
                  % (samples[-1][0], n, rss / 1024))
            sys.stdout.flush()
            if n >= args.records or not persister.alive():
                done.set()
            if time.monotonic() - started > 3600:
                print('giving up after an hour')
                break
        elapsed = samples[-1][0]
        print('\n%d records in %.0f s: %.0f records/s overall'
              % (samples[-1][1], elapsed, samples[-1][1] / elapsed))
        # Throughput per full minute of steady state (after the first write).
        first_write = next(s for s in samples if s[1] > 0)
        minutes = []
        t0 = first_write
        for s in samples:
            if s[0] - t0[0] >= 60:
                minutes.append(((s[1] - t0[1]) / (s[0] - t0[0]), s[2]))
                t0 = s
        for i, (rate, rss) in enumerate(minutes):
            print('  minute %d: %7.0f records/s, RSS %.1f MiB'
                  % (i + 1, rate, rss / 1024))
        if len(minutes) >= 2:
            print('last minute vs first: %+.0f%% throughput, %+.1f MiB RSS'
                  % (100 * (minutes[-1][0] / minutes[0][0] - 1),
                     (minutes[-1][1] - minutes[0][1]) / 1024))
        print('peak worker RSS: %.1f MiB' % (max(s[2] for s in samples)
                                             / 1024))
        persister.stop()
        per_tenant = args.records // args.tenants
        wrong = 0
        for tenant in tenants:
            rows = influx.rows('SELECT count(value) FROM /.*/',
                               'mon_' + tenant)
            if sum(r['count'] for r in rows) != per_tenant:
                wrong += 1
        print('counts: %d of %d tenant databases hold exactly %d points'
              % (args.tenants - wrong, args.tenants, per_tenant))
    finally:
        if persister is not None:
            persister.stop()
        broker.close()
        influx.close()


if __name__ == '__main__':
    main()
