"""Shared fixtures: real servers for functional tests, config for all."""

from __future__ import annotations

import os
import shutil

import pytest
from oslo_config import cfg

from monasca_persister_dbpt import conf as dbpt_conf
from monasca_persister_dbpt.commits.buffers import TenantBuffers
from tests import servers


@pytest.fixture(autouse=True)
def buffers_closed_after_each_test(monkeypatch):
    """Every driver a test builds in process has its timer stopped when
    the test ends: left running, it went on writing to servers that later
    tests had stopped, and logged into streams pytest had closed."""
    made = []
    build = TenantBuffers.__init__

    def tracked(self, *args, **kwargs):
        build(self, *args, **kwargs)
        made.append(self)
    monkeypatch.setattr(TenantBuffers, '__init__', tracked)
    yield
    for buffers in made:
        buffers.close()


@pytest.fixture
def conf(tmp_path_factory):
    """A fresh ConfigOpts with the host's [influxdb] and our [dbpt] groups
    (the spill in a folder of the test's own)."""
    conf = cfg.ConfigOpts()
    dbpt_conf.register_opts(conf)
    conf([], project='dbpt-test', default_config_files=[])
    conf.set_override('spill_dir', str(tmp_path_factory.mktemp('spill')),
                      'dbpt')
    # Pure unit tests post nothing from a child process (influx_conf, for
    # the real servers, has the default again).
    conf.set_override('write_process', False, 'dbpt')
    yield conf
    conf.reset()
    conf.clear_override('spill_dir', 'dbpt')
    conf.clear_override('write_process', 'dbpt')


@pytest.fixture(scope='session')
def influx_server(tmp_path_factory):
    server = servers.InfluxServer(
        str(tmp_path_factory.mktemp('influxd'))).start()
    yield server
    server.close()


@pytest.fixture
def influx(influx_server):
    """The session's influxd, emptied before each test."""
    influx_server.drop_all()
    return influx_server


@pytest.fixture
def two(tmp_path):
    """A second influxd of this test's own."""
    server = servers.InfluxServer(str(tmp_path / 'two')).start()
    yield server
    server.close()


@pytest.fixture
def three(tmp_path):
    """A third influxd of this test's own."""
    server = servers.InfluxServer(str(tmp_path / 'three')).start()
    yield server
    server.close()


@pytest.fixture(scope='session')
def broker(tmp_path_factory):
    broker = servers.KafkaBroker(str(tmp_path_factory.mktemp('tansu')))
    broker.start()
    yield broker
    broker.close()


@pytest.fixture
def influx_conf(conf, influx):
    """Config pointing at the test influxd, db_per_tenant on."""
    conf.set_override('ip_address', influx.host, 'influxdb')
    conf.set_override('port', influx.port, 'influxdb')
    conf.set_override('db_per_tenant', True, 'influxdb')
    conf.set_override('retry_timeout', 5, 'dbpt')
    conf.set_override('hold_after', 2, 'dbpt')
    # Driver tests feed one flush and count: write it at the flush (the
    # coalescing tests turn max_delay on themselves).
    conf.set_override('max_delay', 0, 'dbpt')
    conf.set_override('stats_interval', 0, 'dbpt')
    conf.clear_override('write_process', 'dbpt')
    return conf


@pytest.fixture
def persister_conf(influx, tmp_path):
    """A persister.conf for the migration tool, pointing at the test influxd."""
    path = tmp_path / 'persister.conf'
    path.write_text(
        '[DEFAULT]\nlog_file = %s\n\n[influxdb]\ndatabase_name = mon\n'
        'db_per_tenant = True\nip_address = %s\nport = %d\n'
        'default_retention_hours = 0\n\n[dbpt]\nretry_timeout = 10\n'
        % (tmp_path / 'migrate.log', influx.host, influx.port))
    return str(path)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if 'functional' in str(item.fspath):
            item.add_marker(pytest.mark.functional)


def pytest_report_header(config):
    influxd = shutil.which('influxd') or '/usr/bin/influxd'
    return 'influxd: %s%s' % (influxd, '' if os.path.exists(influxd)
                              else ' (missing: apt-get install influxdb)')
