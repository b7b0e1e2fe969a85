"""What one write request costs the worker's Python: requests vs urllib3.

POSTs the same line protocol to one influxd, one request after another,
through a ``requests.Session`` (as the writer did) and through
:class:`~monasca_persister_dbpt.influx.connections.WritePools` (urllib3,
as it does now), alternating, at several request sizes, and prints the
process's CPU time per request (``time.process_time``: what the writer
threads take from the GIL the host's thread needs) and the wall time.

    .venv/bin/python bench/http_client.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import requests

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from monasca_persister_dbpt.influx.connections import WritePools  # noqa: E402
from monasca_persister_dbpt.placement import Server  # noqa: E402
from tests import servers  # noqa: E402

_OCTETS = {'Content-Type': 'application/octet-stream'}


def body(points: int, first: int) -> bytes:
    return '\n'.join(
        'cpu.idle_perc,hostname=host-%d,service=svc,_tenant_id=t,_region=r '
        'value=%d.5,value_meta="{}" %d' % (i % 20, i, first + i)
        for i in range(points)).encode()


def timed(post, bodies) -> tuple[float, float]:
    """(CPU µs, wall µs) a request."""
    cpu, wall = time.process_time(), time.perf_counter()
    for item in bodies:
        post(item)
    n = len(bodies)
    return ((time.process_time() - cpu) / n * 1e6,
            (time.perf_counter() - wall) / n * 1e6)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--requests', type=int, default=2000)
    parser.add_argument('--sizes', default='13,200,1000')
    parser.add_argument('--repeat', type=int, default=3)
    args = parser.parse_args()
    influx = servers.InfluxServer().start()
    try:
        influx.query('CREATE DATABASE bench')
        server = Server('127.0.0.1', int(influx.url.rsplit(':', 1)[1]))
        session = requests.Session()
        session.auth = lambda r: r   # as the writer: no ~/.netrc lookups
        pools = WritePools(1, 30.0)
        params = {'db': 'bench', 'precision': 'ms'}

        def via_requests(data):
            response = session.post(influx.url + '/write', params=params,
                                    data=data, timeout=30, headers=_OCTETS)
            assert response.status_code == 204, response.text

        def via_urllib3(data):
            status, text = pools.post(server, '/write', params, data)
            assert status == 204, text
        first = int(time.time() * 1000) - 3600 * 1000
        print('points a request   client     CPU us/request   wall us/request'
              '   (medians of %d x %d requests)' % (args.repeat,
                                                     args.requests))
        for size in [int(s) for s in args.sizes.split(',')]:
            runs = {'requests': [], 'urllib3': []}
            for _ in range(args.repeat):
                for label, post in (('requests', via_requests),
                                    ('urllib3', via_urllib3)):
                    bodies = [body(size, first + i * size)
                              for i in range(args.requests)]
                    first += size * args.requests
                    runs[label].append(timed(post, bodies))
            for label, results in runs.items():
                print('%16d   %-9s  %14.0f   %15.0f' % (
                    size, label, statistics.median(r[0] for r in results),
                    statistics.median(r[1] for r in results)), flush=True)
        pools.close()
    finally:
        influx.close()


if __name__ == '__main__':
    main()
