"""``TenantBuffers.add`` alone: microseconds a point at R = 1 and R = 2.

No server and no writer: 300,000 points over 100 tenants are buffered
(nothing is ever shipped), so the figure is the host thread's own cost of
buffering a point for each of its replicas; with the points bound alone
and with ``buffered_memory_mb`` sampling the lines (a budget that never
binds here), one point a call (the host's loop) and 1,000 groups a call
(the batched consumer's ``put_many``).

    .venv/bin/python bench/buffers_add.py
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from monasca_persister_dbpt.commits.buffers import TenantBuffers  # noqa
from monasca_persister_dbpt.placement import PlacementMap, Server  # noqa
from monasca_persister_dbpt.stats import Stats  # noqa: E402

POINTS, TENANTS = 300000, 100


class _NoWriter:
    retry_timeout = 5.0
    schema = None

    def submit_call(self, *args):
        raise AssertionError('nothing is shipped in this benchmark')

    def is_down(self, server):
        return False


def main():
    servers = {n: Server('192.0.2.%d' % i) for i, n in enumerate('abc', 1)}
    tenants = ['t%d' % i for i in range(TENANTS)]
    line = 'cpu,host=a value=1 1'
    for replicas, memory, many in ((1, None, False), (1, 2 ** 30, False),
                                   (2, None, False), (2, 2 ** 30, False),
                                   (1, None, True), (1, 2 ** 30, True)):
        placements = PlacementMap(servers=servers, hash_servers=list(servers),
                                  replicas=replicas)
        buffers = TenantBuffers(
            placements, _NoWriter(), Stats(interval=0), chunk_points=10000,
            coalesce_points=10 ** 9, max_delay=0, buffered_max=10 ** 9,
            held_max=0, hold_after=None, buffered_bytes=memory)
        started = time.perf_counter()
        if many:
            groups = [(tenants[i % TENANTS], [line]) for i in range(1000)]
            for _ in range(POINTS // len(groups)):
                buffers.put_many(groups)
        else:
            for i in range(POINTS):
                buffers.add(tenants[i % TENANTS], line)
        took = time.perf_counter() - started
        print('R=%d, %s, %s: %.3f us a point' % (
            replicas, 'put_many of 1,000' if many else 'add',
            'buffered_memory_mb' if memory else 'points bound only',
            took / POINTS * 1e6))


if __name__ == '__main__':
    main()
