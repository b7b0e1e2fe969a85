"""How many tenant databases one influxd should hold: memory per shard.

Creates tenant databases in steps on one fresh influxd, each with one point
in its default policy (one shard) and, with ``--tiers``, one point in each
tier policy (one more shard per tier), as our drivers and tiers would, and
prints influxd's resident memory and the shard count after each step.

    .venv/bin/python bench/databases_memory.py
    .venv/bin/python bench/databases_memory.py --steps 500,1000 --tiers 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import requests

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from tests import servers  # noqa: E402


def rss_mib(pid: int) -> float:
    with open('/proc/%d/status' % pid) as handle:
        for line in handle:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    return 0.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--steps', default='0,250,500,1000,2000')
    parser.add_argument('--tiers', type=int, default=0,
                        help='tier policies per database (one shard each)')
    args = parser.parse_args()
    influx = servers.InfluxServer().start()
    session = requests.Session()
    now = int(time.time() * 1000)
    try:
        made = 0
        print('%8s %8s %10s %12s' % ('dbs', 'shards', 'RSS MiB',
                                     'MiB/shard'))
        base = None
        for target in [int(s) for s in args.steps.split(',')]:
            while made < target:
                db = 'mon_%032x' % made
                statements = ['CREATE DATABASE "%s"' % db] + [
                    'CREATE RETENTION POLICY "tier_%d" ON "%s" DURATION 4w '
                    'REPLICATION 1' % (t, db) for t in range(args.tiers)]
                session.post(influx.url + '/query',
                             data={'q': ';'.join(statements)})
                for rp in ['autogen'] + ['tier_%d' % t
                                         for t in range(args.tiers)]:
                    session.post(influx.url + '/write', params={
                        'db': db, 'rp': rp, 'precision': 'ms'},
                        data='cpu.idle_perc,hostname=h value=1 %d' % now)
                made += 1
            time.sleep(2)  # let caches settle
            rss = rss_mib(influx.proc.pid)
            shards = made * (1 + args.tiers)
            if base is None:
                base = rss
            print('%8d %8d %10.1f %12s' % (
                made, shards, rss,
                '%.3f' % ((rss - base) / shards) if shards else '-'))
            sys.stdout.flush()
    finally:
        influx.close()


if __name__ == '__main__':
    main()
