"""influxd's cost curve: points/s against points per request, by databases.

What ``[dbpt] buffered_points_max`` buys at many tenants: a request holds
one tenant's points (InfluxDB 1.x writes one database a request), so with
N tenants writing evenly a request holds about ``buffered_points_max / N``
points. This POSTs the same kind of metric lines the persister writes
straight to ``/write`` of one influxd, over ``--connections`` (the
writer's threads), round-robin over ``--databases`` databases made first,
at each ``--sizes`` points per request, and prints points/s and requests/s,
then the memory one buffered point takes in the worker (its line, as the
driver keeps it). Every request brings new points (as the persister's do)
unless ``--same-points``.

    .venv/bin/python bench/request_size.py
    .venv/bin/python bench/request_size.py --databases 1,1000 \\
        --sizes 20,200,1000,5000 --points 400000
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import os
import sys
import time
import tracemalloc

import requests

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from bench.persister_e2e import payloads_lines  # noqa: E402
from bench.scratch import scratch_dir  # noqa: E402
from tests import records  # noqa: E402
from tests import servers  # noqa: E402


def lines_for(count: int, tenant: str, start_ms: int) -> list[str]:
    """The driver's own lines for *count* records of one tenant."""
    payloads = records.metric_stream(count, [tenant], start_ms, seed=3)
    return payloads_lines(payloads)[tenant]


def run(url: str, databases: list[str], lines: list[str], size: int,
        points: int, connections: int) -> tuple[float, float]:
    """(points/s, requests/s) writing *points* in requests of *size*:
    *lines* in turn, so each request brings new points when *lines* holds
    at least *points* (a point written again costs influxd less)."""
    bodies = []
    for start in range(0, len(lines), size):
        chunk = lines[start:start + size]
        if len(chunk) == size:
            bodies.append('\n'.join(chunk).encode())
    requests_needed = max(1, points // size)
    plan = list(zip(itertools.cycle(databases),
                    itertools.islice(itertools.cycle(bodies),
                                     requests_needed)))
    sessions = [requests.Session() for _ in range(connections)]

    def post(job):
        n, (database, body) = job
        response = sessions[n % connections].post(
            url + '/write', params={'db': database, 'precision': 'ms'},
            data=body, timeout=120)
        response.raise_for_status()

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(connections) as pool:
        list(pool.map(post, enumerate(plan)))
    took = time.monotonic() - started
    return len(plan) * size / took, len(plan) / took


def point_bytes(lines: list[str]) -> float:
    """Bytes one buffered point takes: its str in a list."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = [str(line + ' ')[:-1] for line in lines]  # fresh objects
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / len(kept)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--databases', default='1,100,1000')
    parser.add_argument('--sizes', default='10,50,200,1000,5000')
    parser.add_argument('--points', type=int, default=300000,
                        help='points written at each size')
    parser.add_argument('--connections', type=int, default=4)
    parser.add_argument('--same-points', dest='fresh', action='store_false',
                        help='write the same few requests again and again '
                             '(how this bench ran until 2026-12-08): each '
                             'point after the first is an overwrite')
    args = parser.parse_args()
    try:
        counts = [int(v) for v in args.databases.split(',')]
        sizes = [int(v) for v in args.sizes.split(',')]
    except ValueError as exc:
        parser.error('--databases and --sizes take numbers: %s' % exc)
    if min(counts + sizes) < 1 or args.points < 1 or args.connections < 1:
        parser.error('every number must be >= 1')
    influx = servers.InfluxServer(scratch_dir('dbpt-request-size-')).start()
    try:
        start_ms = int(time.time() * 1000) - 2 * 3600 * 1000
        lines = lines_for(max(sizes) * 4, '%032x' % 0xab, start_ms)
        print('one buffered point: %.0f bytes (%d-character lines)' % (
            point_bytes(lines), sum(map(len, lines)) / len(lines)))
        print('%9s %8s %12s %12s' % ('databases', 'pts/req', 'points/s',
                                     'requests/s'))
        for count in counts:
            names = ['size_%d_%d' % (count, i) for i in range(count)]
            for start in range(0, count, 500):
                influx.query(';'.join('CREATE DATABASE %s' % n
                                      for n in names[start:start + 500]))
            # Each database's first shard, made before anything is timed.
            run(influx.url, names, lines, 1, count, args.connections)
            for size in sizes:
                points = max(args.points, size * count)
                if args.fresh:
                    # New points every request, as the persister writes.
                    start_ms += points
                    fresh = lines_for(points, '%032x' % 0xab, start_ms)
                else:
                    fresh = lines
                rate, made = run(influx.url, names, fresh, size, points,
                                 args.connections)
                print('%9d %8d %12.0f %12.0f' % (count, size, rate, made))
    finally:
        influx.close()


if __name__ == '__main__':
    main()
