"""Shards one tenant database holds at steady state, for a policy layout.

Creates one tenant database through the package's own schema code (raw
policy and tiers as ``[dbpt]`` would create them, ``shard_duration``
applied), writes one point every hour into each policy over as long as that
policy keeps data (the steady state of a tenant that writes all the time),
and prints the shard groups influxd made per policy. Multiply by the number
of tenants and by the memory per shard of ``bench/databases_memory.py``.

    .venv/bin/python bench/shard_count.py
    .venv/bin/python bench/shard_count.py --retention 4w --tiers 5m:4w,1h:260w --shard-duration 7d
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from monasca_persister_dbpt.influx.writer import InfluxWriter  # noqa: E402
from monasca_persister_dbpt.placement import PlacementMap  # noqa: E402
from monasca_persister_dbpt.placement import parse_duration  # noqa: E402
from monasca_persister_dbpt.placement import parse_tiers  # noqa: E402
from tests import servers  # noqa: E402

HOUR_NS = 3600 * 10 ** 9


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--retention', default='4w')
    parser.add_argument('--tiers', default='5m:4w,1h:260w')
    parser.add_argument('--shard-duration', default='7d')
    args = parser.parse_args()
    influx = servers.InfluxServer().start()
    try:
        raw = parse_duration(args.retention)
        pm = PlacementMap(
            default_retention_hours=0, tiers=parse_tiers(args.tiers),
            retention_overrides={'t': raw},
            shard_duration=args.shard_duration or None,
            server=servers_server(influx))
        placement = pm.place('t')
        writer = InfluxWriter()
        writer.ensure([placement])
        now = time.time_ns()
        policies = [(placement.retention.name, placement.retention.hours)]
        policies += [(t.policy.name, t.policy.hours) for t in placement.tiers]
        for name, hours in policies:
            span = (hours or 24 * 365) - 2  # inside the policy
            lines = ['m value=1 %d' % (now - h * HOUR_NS)
                     for h in range(span)]
            for i in range(0, len(lines), 5000):
                influx.write(placement.database, lines[i:i + 5000],
                             precision='ns', rp=name)
        shards = collections.Counter(
            r['retention_policy'] for r in influx.rows('SHOW SHARDS')
            if r.get('database') == placement.database)
        groups = {r['name']: r['shardGroupDuration'] for r in influx.rows(
            'SHOW RETENTION POLICIES ON "%s"' % placement.database)}
        print('retention %s, tiers %s, shard_duration %s' % (
            args.retention, args.tiers, args.shard_duration or '(unset)'))
        for name, _ in policies:
            print('  %-10s shard groups of %-9s %4d shards' % (
                name, groups[name], shards[name]))
        print('  total per tenant: %d shards' % sum(shards.values()))
    finally:
        influx.close()


def servers_server(influx):
    from monasca_persister_dbpt.placement import Server
    return Server(influx.host, influx.port)


if __name__ == '__main__':
    main()
