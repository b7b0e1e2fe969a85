"""Writes through the worker's threads against its write process.

POSTs the same requests to one influxd, all offered at once as a flush
at many tenants does: through ``--threads`` threads posting with
:class:`~monasca_persister_dbpt.influx.connections.WritePools` (the
worker's own path, ``[dbpt] write_process = false``), and through
:class:`~monasca_persister_dbpt.influx.write_process.WriteProcess` (the
default), alternating, idle and beside a thread that runs Python all the
time (as the host's thread does). Prints requests/s and this process's
CPU a request (the child's is its own, on the other core).

    .venv/bin/python bench/write_process.py
    .venv/bin/python bench/write_process.py --points 400 --requests 2000
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from bench.http_client import body, spin  # noqa: E402
from monasca_persister_dbpt.influx.connections import WritePools  # noqa: E402
from monasca_persister_dbpt.influx.write_process import WriteProcess  # noqa: E402,E501
from monasca_persister_dbpt.placement import Server  # noqa: E402
from tests import servers  # noqa: E402

PARAMS = {'db': 'bench', 'precision': 'ms'}


def by_threads(server, pools, threads, lines_list) -> None:
    left = list(lines_list)
    lock = threading.Lock()
    failed = []

    def work():
        while True:
            with lock:
                if not left:
                    return
                lines = left.pop()
            data = '\n'.join(lines).encode('utf-8')   # as the writer does
            status, text = pools.post(server, '/write', PARAMS, data)
            if status != 204:
                failed.append(text)
    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if failed:
        raise SystemExit('a write failed: %s' % failed[0][:200])


def by_process(server, poster, lines_list) -> None:
    done = threading.Condition()
    answers = []

    def answered(status, text):
        with done:
            answers.append((status, text))
            done.notify()
    for lines in lines_list:
        poster.submit(server, PARAMS, lines, answered)
    with done:
        while len(answers) < len(lines_list):
            done.wait(1.0)
    bad = [text for status, text in answers if status != 204]
    if bad:
        raise SystemExit('a write failed: %s' % bad[0][:200])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--requests', type=int, default=1000)
    parser.add_argument('--points', type=int, default=400)
    parser.add_argument('--threads', type=int, default=4,
                        help='writer threads, and the child\'s connections')
    parser.add_argument('--repeat', type=int, default=3)
    args = parser.parse_args()
    for name in ('requests', 'points', 'threads', 'repeat'):
        if getattr(args, name) < 1:
            parser.error('--%s takes a whole number of at least 1, not %d'
                         % (name, getattr(args, name)))
    influx = servers.InfluxServer().start()
    stop = threading.Event()
    poster = None
    try:
        influx.query('CREATE DATABASE bench')
        server = Server('127.0.0.1', int(influx.url.rsplit(':', 1)[1]))
        pools = WritePools(args.threads, 30.0)
        poster = WriteProcess(args.threads, 30.0)
        first = int(time.time() * 1000) - 3600 * 1000
        print('%d requests of %d points, %d threads / connections; medians '
              'of %d' % (args.requests, args.points, args.threads,
                         args.repeat))
        print('another thread    path        requests/s   CPU us/request '
              '(this process)')
        for busy in (False, True):
            if busy:
                threading.Thread(target=spin, args=(stop,),
                                 daemon=True).start()
            runs: dict = {'threads': [], 'process': []}
            for _ in range(args.repeat):
                for label in runs:
                    lines_list = [
                        body(args.points, first + i * args.points).decode()
                        .split('\n') for i in range(args.requests)]
                    first += args.points * args.requests
                    cpu, wall = time.process_time(), time.perf_counter()
                    if label == 'threads':
                        by_threads(server, pools, args.threads, lines_list)
                    else:
                        by_process(server, poster, lines_list)
                    wall = time.perf_counter() - wall
                    cpu = time.process_time() - cpu
                    runs[label].append((args.requests / wall,
                                        cpu / args.requests * 1e6))
            for label, results in runs.items():
                print('%-16s  %-10s  %10.0f   %14.0f' % (
                    'runs Python' if busy else 'idle', label,
                    statistics.median(r[0] for r in results),
                    statistics.median(r[1] for r in results)), flush=True)
        pools.close()
    finally:
        stop.set()
        if poster is not None:
            poster.close()
        influx.close()


if __name__ == '__main__':
    main()
