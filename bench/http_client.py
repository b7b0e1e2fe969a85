"""What one write request costs the worker's Python: requests vs urllib3.

POSTs the same line protocol to one influxd, one request after another,
through a ``requests.Session`` (as the writer did) and through
:class:`~monasca_persister_dbpt.influx.connections.WritePools` (urllib3,
as it does now), alternating, at several request sizes, and prints the
process's CPU time per request (``time.process_time``: what the writer
threads take from the GIL the host's thread needs) and the wall time.

With ``--busy``, a thread runs Python all the time meanwhile, as the
host's thread does, and a third client joins: the standard library's
``http.client`` over a socket in blocking mode with the kernel's send and
receive timeouts, which gives up the interpreter lock once a system call
(urllib3's sockets, with Python's timeout, twice: a poll, then the call,
and a poll before each reuse). Each time it is given up, the thread must
wait for the busy thread to hand it back (up to the switch interval,
5 ms), so this says whether those hand-backs, not influxd, are what a
request waits for in the worker. The CPU column is then the thread's own
(``time.thread_time``), not the process's.

    .venv/bin/python bench/http_client.py
    .venv/bin/python bench/http_client.py --busy --sizes 400
    .venv/bin/python bench/http_client.py --busy --sizes 400 \
        --switch-interval 0.001
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import statistics
import struct
import sys
import threading
import time
import urllib.parse

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


def timed(post, bodies, clock=time.process_time) -> tuple[float, float]:
    """(CPU µs, wall µs) a request."""
    cpu, wall = clock(), time.perf_counter()
    for item in bodies:
        post(item)
    n = len(bodies)
    return ((clock() - cpu) / n * 1e6,
            (time.perf_counter() - wall) / n * 1e6)


class _Blocking(http.client.HTTPConnection):
    """Blocking mode, the kernel's timeouts: one GIL release a call."""

    def connect(self):
        super().connect()
        self.sock.settimeout(None)
        limit = struct.pack('ll', 30, 0)
        for option in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
            self.sock.setsockopt(socket.SOL_SOCKET, option, limit)


def spin(stop: threading.Event) -> None:
    """Python all the time, as the host's thread between its waits."""
    n = 0
    while not stop.is_set():
        for i in range(1000):
            n += i


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--requests', type=int, default=2000)
    parser.add_argument('--sizes', default='13,200,1000')
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--busy', action='store_true',
                        help='a thread runs Python meanwhile (see above)')
    parser.add_argument('--switch-interval', type=float, default=None,
                        help='sys.setswitchinterval, seconds (default: '
                             'Python\'s, 0.005)')
    args = parser.parse_args()
    if args.switch_interval is not None:
        if not 0 < args.switch_interval <= 1:
            parser.error('--switch-interval takes seconds above 0, up to 1, '
                         'not %r' % args.switch_interval)
        sys.setswitchinterval(args.switch_interval)
    for name in ('requests', 'repeat'):
        if getattr(args, name) < 1:
            parser.error('--%s takes a whole number of at least 1, not %d'
                         % (name, getattr(args, name)))
    try:
        sizes = [int(s) for s in args.sizes.split(',')]
        if min(sizes) < 1:
            raise ValueError
    except ValueError:
        parser.error('--sizes takes whole numbers of at least 1, separated '
                     'by commas, not %r' % args.sizes)
    stop = threading.Event()
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
        blocking = _Blocking(server.host, server.port)
        url = '/write?' + urllib.parse.urlencode(params)

        def via_http_client(data):
            blocking.request('POST', url, body=data, headers=_OCTETS)
            response = blocking.getresponse()
            text = response.read()
            assert response.status == 204, text
        clients = [('requests', via_requests), ('urllib3', via_urllib3)]
        clock = time.process_time
        if args.busy:
            clients.append(('http.client', via_http_client))
            clock = time.thread_time
            threading.Thread(target=spin, args=(stop,), daemon=True).start()
        first = int(time.time() * 1000) - 3600 * 1000
        print('points a request   client     CPU us/request   wall us/request'
              '   (medians of %d x %d requests)' % (args.repeat,
                                                     args.requests))
        if args.busy:
            print('a thread runs Python meanwhile (switch interval %g s); '
                  'CPU is the requesting thread\'s own'
                  % sys.getswitchinterval())
        for size in sizes:
            runs: dict = {label: [] for label, _ in clients}
            for _ in range(args.repeat):
                for label, post in clients:
                    bodies = [body(size, first + i * size)
                              for i in range(args.requests)]
                    first += size * args.requests
                    runs[label].append(timed(post, bodies, clock))
            for label, results in runs.items():
                print('%16d   %-11s  %12.0f   %15.0f' % (
                    size, label, statistics.median(r[0] for r in results),
                    statistics.median(r[1] for r in results)), flush=True)
        blocking.close()
        pools.close()
    finally:
        stop.set()   # also when a request fails: no thread left spinning
        influx.close()


if __name__ == '__main__':
    main()
