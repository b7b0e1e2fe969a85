"""The tenants command at scale: ``list`` over many tenant databases on
several influxd, and ``export``/``import`` against the migration's copy.

Starts ``--servers`` influxd, makes ``--tenants`` tenant databases spread
over them by ``hash_servers`` (each with a few points, so each has a shard
and its statistics), then times ``monasca-persister-dbpt-tenants list`` as
an operator runs it. Then one tenant of ``--points`` points: ``export`` to
a file, the same points copied server to server by the migration's
streaming copy (what ``--rebalance`` and the migration use), ``drop`` and
``import`` of the file; points/s, file size and the command's peak RSS.

    .venv/bin/python bench/tenants.py
    .venv/bin/python bench/tenants.py --tenants 2000 --servers 2

influxd keeps about 9 files open per shard: with one shard per database,
``--servers`` must keep ``tenants / servers`` under ``ulimit -n`` / 9.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import subprocess
import sys
import tempfile
import time
import types

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from bench.scratch import scratch_dir  # noqa: E402
from oslo_config import cfg  # noqa: E402

from monasca_persister_dbpt import conf as dbpt_conf  # noqa: E402
from monasca_persister_dbpt.influx.writer import InfluxWriter  # noqa: E402
from monasca_persister_dbpt.migrate.plan import MAX_NS, MIN_NS  # noqa: E402
from monasca_persister_dbpt.migrate.stream import Streamer  # noqa: E402
from monasca_persister_dbpt.placement import PlacementMap  # noqa: E402
from tests import servers  # noqa: E402

TENANTS = os.path.join(os.path.dirname(sys.executable),
                       'monasca-persister-dbpt-tenants')
NOW_NS = time.time_ns()


def run(config, *argv):
    """The command as an operator runs it: seconds, stdout, peak RSS."""
    with tempfile.TemporaryFile('w+') as out, \
            tempfile.TemporaryFile('w+') as err:
        started = time.monotonic()
        proc = subprocess.Popen([TENANTS, '--config-file', config] +
                                list(argv), stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        took = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        if status != 0:
            raise RuntimeError('%s: exit status %d: %s' % (argv, status,
                                                          err.read()))
        return took, out.read(), usage.ru_maxrss


def lines_of(tenant, n, start_ns):
    return ['cpu.idle_perc,_region=RegionOne,_tenant_id=%s,hostname=h%d '
            'value=%d.5,value_meta="{}" %d' % (tenant, i % 100, i,
                                                start_ns + i * 10 ** 9)
            for i in range(n)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--tenants', type=int, default=10000)
    parser.add_argument('--servers', type=int, default=5)
    parser.add_argument('--points', type=int, default=300000,
                        help='points of the tenant exported and imported')
    args = parser.parse_args()
    work = scratch_dir('dbpt-tenants-')
    influxes = [servers.InfluxServer(os.path.join(work, 'influx%d' % i))
                .start() for i in range(args.servers)]
    try:
        names = ['default'] + ['s%d' % i for i in range(1, args.servers)]
        config = os.path.join(work, 'persister.conf')
        with open(config, 'w') as handle:
            handle.write(
                '[influxdb]\nip_address = %s\nport = %d\ndb_per_tenant = '
                'True\n[dbpt]\nservers = %s\nhash_servers = %s\n'
                'tenant_overrides_file = %s\n' % (
                    influxes[0].host, influxes[0].port,
                    ','.join('%s:%s' % (n, s.url) for n, s in
                             zip(names[1:], influxes[1:])), ','.join(names),
                    os.path.join(work, 'overrides')))
        with open(os.path.join(work, 'overrides'), 'w') as handle:
            handle.write('big default\ncopy s1\n')
        conf = cfg.ConfigOpts()
        dbpt_conf.register_opts(conf)
        conf([], default_config_files=[config])
        placements = PlacementMap.from_conf(conf)
        writer = InfluxWriter(concurrency=8, retry_timeout=60)
        tenants = ['%032x' % (0xab0000 + i) for i in range(args.tenants)]
        started = time.monotonic()
        placed = [placements.place(t) for t in tenants]
        writer.ensure(placed)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda p: writer.write(p, lines_of(
                p.tenant_id, 3, NOW_NS - 3600 * 10 ** 9), precision='ns'),
                placed))
        print('%d tenant databases over %d influxd made in %.0f s' % (
            args.tenants, args.servers, time.monotonic() - started))
        for attempt in ('first', 'second'):
            took, out, _ = run(config, 'list', '-f', 'value', '-c',
                               'Tenant', '-c', 'Series')
            rows = out.strip().split('\n')
            assert len(rows) == args.tenants, len(rows)
            print('  list (%s run): %.2f s for %d tenants (%.0f tenants/s)'
                  % (attempt, took, len(rows), len(rows) / took))

        big = placements.place('big')
        for start in range(0, args.points, 5000):
            writer.write(big, lines_of('big', min(5000, args.points - start),
                                       NOW_NS - 30 * 86400 * 10 ** 9 +
                                       start * 10 ** 9), precision='ns')
        path = os.path.join(work, 'big.gz')
        took, _, rss = run(config, 'export', 'big', '--out', path)
        size = os.path.getsize(path)
        print('  export: %d points in %.1f s (%.0f points/s), %.1f bytes a '
              'point gzipped, command peak RSS %.0f MiB' % (
                  args.points, took, args.points / took, size / args.points,
                  rss / 1024))
        copy = placements.place('copy')
        streamer = Streamer(writer, big.server, big.database)
        chunk = types.SimpleNamespace(
            source_rp='autogen', measurement='cpu.idle_perc',
            tenant_tag='_tenant_id', tenant_id='big', start=MIN_NS,
            end=MAX_NS, placement=copy, target_rp=None)
        writer.ensure([copy])
        started = time.monotonic()
        copied = streamer.copy(chunk)
        took = time.monotonic() - started
        assert copied == args.points, copied
        print('  the migration\'s streaming copy, server to server: %.1f s '
              '(%.0f points/s)' % (took, copied / took))
        run(config, 'drop', 'big', '--yes', '--no-block')
        took, out, rss = run(config, 'import', path)
        print('  import (write and verify): %.1f s (%.0f points/s), peak '
              'RSS %.0f MiB' % (took, args.points / took, rss / 1024))
        print('  influxd RSS: %s MiB' % ', '.join(
            '%.0f' % (servers_rss(i) / 1024) for i in influxes))
    finally:
        for influx in influxes:
            influx.close()


def servers_rss(influx) -> int:
    from bench.soak import rss_kib
    return rss_kib(influx.proc.pid)


if __name__ == '__main__':
    main()
