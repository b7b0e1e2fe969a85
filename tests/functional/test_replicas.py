"""Replicas on three real influxd with ``replicas = 2``: the real
monasca-persister 9.0.0 writes every tenant to two of them, monasca-api
11.0.0 reads through our driver while one is SIGKILLed for 60 s and after,
and ``--repair`` leaves both copies of every tenant equal; a server that
comes back without its data directory is read around and rebuilt."""

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest
from oslo_config import cfg

from monasca_persister_dbpt.placement import PlacementMap, Server
from tests import records
from tests import servers

api_conf = pytest.importorskip('monasca_api.conf')

SCRIPT = os.path.join(os.path.dirname(sys.executable),
                      'monasca-persister-dbpt-migrate')
REGION = 'RegionOne'
NAME = 'cpu.idle_perc'
TENANTS = ['rep-%d' % n for n in range(6)]
OUTAGE = 60.0            # seconds the killed influxd stays down
PER_ROUND = 10           # records per tenant per round
START_S = int(time.time()) // 3600 * 3600 - 2 * 3600


def _wait(check, timeout, what):
    servers.wait_for(check, timeout, what)


class Cluster:
    """Three influxd, a broker topic, a persister, monasca-api's view."""

    def __init__(self, influx, two, three, broker, tmp_path, spill):
        self.by_name = {'default': influx, 'two': two, 'three': three}
        self.tmp = tmp_path
        suffix = uuid.uuid4().hex[:8]
        self.topic = 'metrics_' + suffix
        broker.create_topic(self.topic)
        broker.create_topic('alarms_' + suffix)
        self.broker = broker
        self.dbpt = ('servers = two:%s,three:%s\nhash_servers = default,two,'
                     'three\nreplicas = 2\n' % (two.url, three.url))
        self.persister = servers.Persister(
            influx, broker, str(tmp_path / 'persister'),
            metrics_topic=self.topic, alarms_topic='alarms_' + suffix,
            group='g' + suffix, batch_size=100, extra=self.dbpt +
            'hold_after = 1\nretry_timeout = 10\nmax_delay = 0.5\n'
            'replica_stale_after = 5\n',
            spill_dir=str(tmp_path / 'spill') if spill else '')
        self.placements = PlacementMap(
            servers={n: Server(s.host, s.port) for n, s in
                     self.by_name.items()},
            hash_servers=('default', 'two', 'three'), replicas=2)
        self.sent = {t: [] for t in TENANTS}
        self.round = 0
        self.producer = broker.producer()

    def server(self, copy):
        return next(s for s in self.by_name.values()
                    if s.port == copy.server.port)

    def replicas(self, tenant):
        return [self.server(c) for c in self.placements.place(tenant).copies]

    def feed(self):
        """One round: PER_ROUND records per tenant, distinct times."""
        for tenant in TENANTS:
            for i in range(PER_ROUND):
                n = self.round * PER_ROUND + i
                stamp = (START_S + n) * 1000
                value = float(n)
                self.producer.produce(self.topic, records.encode(
                    records.metric(tenant, timestamp=stamp, value=value,
                                   region=REGION)))
                self.sent[tenant].append((stamp, value))
        assert self.producer.flush(30) == 0
        self.round += 1

    def held(self, server, tenant):
        db = 'mon_' + tenant
        if db not in server.databases():
            return 0
        rows = server.rows('SELECT count(value) FROM "%s"' % NAME, db)
        return rows[0]['count'] if rows else 0

    def written(self, up):
        """Every up replica of every tenant holds everything sent."""
        return all(self.held(s, t) == len(self.sent[t])
                   for t in TENANTS for s in self.replicas(t) if s in up)

    def api(self):
        path = self.tmp / 'monasca-api.conf'
        default = self.by_name['default']
        path.write_text(
            '[influxdb]\nip_address = %s\nport = %d\nuser = monasca-api\n'
            'password = x\ndb_per_tenant = True\n'
            'database_name = mon\n\n[dbpt]\n%sreplica_read_timeout = 3\n'
            % (default.host, default.port, self.dbpt))
        api_conf.register_opts()
        cfg.CONF(['--config-file', str(path)], project='monasca-api',
                 default_config_files=[])
        from monasca_common.simport import simport
        return simport.load('monasca_persister_dbpt.api.metrics_repository:'
                            'MetricsRepository')()

    def check_reads(self, repo):
        """monasca-api answers exactly what was sent, for every tenant."""
        for tenant in TENANTS:
            want = self.sent[tenant]
            (got,) = repo.measurement_list(
                tenant, REGION, NAME, None, START_S - 60,
                START_S + 10 ** 6, None, 100000, False, None)
            values = [m[1] for m in got['measurements']]
            assert values == [v for _, v in want], (tenant, len(values),
                                                    len(want))
            (stats,) = repo.metrics_statistics(
                tenant, REGION, NAME, None, START_S - 60, START_S + 10 ** 6,
                ['count'], 10 ** 6, None, 100, True, None)
            assert sum(row[1] for row in stats['statistics']) == len(want)

    def migrate(self, *args):
        done = subprocess.run(
            [SCRIPT, '--config-file', self.persister.config] + list(args),
            capture_output=True, text=True, timeout=900,
            cwd=str(self.tmp))
        return done.returncode, done.stdout + done.stderr

    def replicas_equal(self):
        """Both replicas of every tenant hold the same points: counts, and
        every point compared."""
        for tenant in TENANTS:
            a, b = self.replicas(tenant)
            q = 'SELECT value FROM "%s"' % NAME
            rows_a = [(r['time'], r['value']) for r in
                      a.rows(q, 'mon_' + tenant)]
            rows_b = [(r['time'], r['value']) for r in
                      b.rows(q, 'mon_' + tenant)]
            assert rows_a == rows_b == self.sent[tenant], tenant


def _kill(server):
    os.killpg(server.proc.pid, signal.SIGKILL)
    server.proc.wait()
    server.proc = None


@pytest.fixture
def cluster_factory(influx, two, three, broker, tmp_path):
    made = []

    def make(spill):
        cluster = Cluster(influx, two, three, broker, tmp_path, spill)
        made.append(cluster)
        return cluster
    yield make
    for cluster in made:
        cluster.persister.stop()
    cfg.CONF.reset()
    cfg.CONF.clear()


@pytest.mark.parametrize('spill', [True, False], ids=['spill', 'no-spill'])
def test_reads_stay_exact_through_a_killed_replica_and_repair_evens_them(
        cluster_factory, spill):
    cluster = cluster_factory(spill)
    victim = cluster.by_name['two']
    on_victim = [t for t in TENANTS if victim in cluster.replicas(t)]
    assert on_victim and len(on_victim) < len(TENANTS)
    cluster.persister.start()
    everyone = set(cluster.by_name.values())
    cluster.feed()
    _wait(lambda: cluster.written(everyone), 120, 'the first round')
    # Three new servers: none of them is taken for one come back empty
    # (else reads skip it and one kill leaves a tenant without a replica).
    assert 'without its data' not in cluster.persister.logtext()
    repo = cluster.api()
    cluster.check_reads(repo)

    _kill(victim)
    up = everyone - {victim}
    killed_at = time.monotonic()
    reads = 0
    while time.monotonic() - killed_at < OUTAGE:
        cluster.feed()
        # What every replica that is up holds, monasca-api returns.
        _wait(lambda: cluster.written(up), 120, 'the up replicas')
        cluster.check_reads(repo)
        reads += 1
    assert reads >= 3
    victim.start()
    for _ in range(3):   # while it catches up, and after
        cluster.feed()
        _wait(lambda: cluster.written(up), 120, 'the up replicas')
        cluster.check_reads(repo)
    assert cluster.persister.alive()
    if spill:
        # The spill gives the killed replica everything it missed.
        _wait(lambda: cluster.written(everyone), 300, 'the spill replay')
    rc, out = cluster.migrate('--repair', '--settle-seconds', '0')
    print(out)
    assert rc == 0, out
    cluster.replicas_equal()
    rc, out = cluster.migrate('--repair', '--dry-run')
    assert rc == 0 and '0 stale range(s) recorded, 0 copy job(s)' in out, out
    cluster.check_reads(repo)
    log = cluster.persister.logtext()
    assert 'stale range' in log
    if not spill:
        assert 'held past [dbpt] replica_stale_after' in log


def test_a_replica_that_comes_back_empty_is_read_around_and_rebuilt(
        cluster_factory):
    cluster = cluster_factory(True)
    victim = cluster.by_name['three']
    cluster.persister.start()
    everyone = set(cluster.by_name.values())
    for _ in range(3):
        cluster.feed()
    _wait(lambda: cluster.written(everyone), 120, 'the first rounds')
    victim.stop()
    for sub in ('meta', 'data', 'wal'):
        shutil.rmtree(os.path.join(victim.dir, sub), ignore_errors=True)
    victim.start()
    assert victim.databases() == set()
    cluster.feed()
    on_victim = [t for t in TENANTS if victim in cluster.replicas(t)]
    # The persister writes the new round there again (in databases it
    # creates anew) and everywhere else.
    _wait(lambda: all(cluster.held(victim, t) == PER_ROUND
                      for t in on_victim), 120, 'the empty server written')
    _wait(lambda: cluster.written(everyone - {victim}), 120, 'the others')
    repo = cluster.api()
    cluster.check_reads(repo)     # from the replica that kept everything
    rc, out = cluster.migrate('--repair', '--settle-seconds', '0')
    assert rc == 0, out
    assert 'all of its history' in out
    cluster.replicas_equal()
    rc, out = cluster.migrate('--repair', '--dry-run')
    assert rc == 0, out
    cluster.check_reads(repo)


def test_the_migration_writes_every_replica_and_verifies_each(
        influx, two, three, tmp_path):
    from tests.functional.test_moving_safely import _config
    config = _config(tmp_path, influx, extra=(
        'servers = two:%s,three:%s\nhash_servers = default,two,three\n'
        'replicas = 2\n' % (two.url, three.url)), retention_hours=0)
    start_s = int(time.time()) // 3600 * 3600 - 3 * 86400
    influx.query('CREATE DATABASE mon')
    for n, tenant in enumerate(TENANTS):
        influx.write('mon', ['cpu.idle_perc,_region=RegionOne,_tenant_id=%s,'
                             'hostname=h%d value=%d %d' % (
                                 tenant, n, i, (start_s + i * 600) * 1000)
                             for i in range(300)])
    placements = PlacementMap(
        servers={'default': Server(influx.host, influx.port),
                 'two': Server(two.host, two.port),
                 'three': Server(three.host, three.port)},
        hash_servers=('default', 'two', 'three'), replicas=2)
    by_port = {s.port: s for s in (influx, two, three)}

    def migrate(*args):
        done = subprocess.run([SCRIPT, '--config-file', config] + list(args),
                              capture_output=True, text=True, timeout=600,
                              cwd=str(tmp_path))
        return done.returncode, done.stdout + done.stderr
    rc, out = migrate('--migrate-time-unit', 'd')
    assert rc == 0, out
    for tenant in TENANTS:
        for copy in placements.place(tenant).copies:
            server = by_port[copy.server.port]
            rows = server.rows('SELECT count(value) FROM "cpu.idle_perc"',
                               'mon_' + tenant)
            assert rows[0]['count'] == 300, (tenant, server.url)
    rc, out = migrate('--migrate-time-unit', 'd', '--verify-only')
    assert rc == 0, out
    # One replica short of a day: the verification names it.
    tenant = TENANTS[0]
    second = by_port[placements.place(tenant).copies[1].server.port]
    second.query('DELETE FROM "cpu.idle_perc" WHERE time < %ds'
                  % (start_s + 86400), 'mon_' + tenant)
    rc, out = migrate('--migrate-time-unit', 'd', '--verify-only')
    assert rc == 1, out
    assert tenant in out
    # The source is untouched.
    assert influx.rows('SELECT count(value) FROM "cpu.idle_perc"',
                       'mon')[0]['count'] == 300 * len(TENANTS)
