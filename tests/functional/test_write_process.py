"""``[dbpt] write_process``: what is the child's own (it posts; one killed,
hung or unable to start loses nothing and marks no server down), and the
write path's behaviours (test_write_path.py, which runs with the switch
on, its default) imported and run again here with it off."""

import os
import signal
import time

import pytest

from monasca_persister_dbpt.repositories.metrics import MetricsRepository
from tests import records
from tests import servers
from tests.functional import test_write_path as path

NOW = int(time.time() * 1000)


@pytest.fixture
def influx_conf(influx_conf):
    """The switch off, for the write path's behaviours imported here."""
    influx_conf.set_override('write_process', False, 'dbpt')
    return influx_conf


@pytest.fixture
def on_conf(influx_conf):
    influx_conf.set_override('write_process', True, 'dbpt')
    return influx_conf


# The write path's behaviours, with the worker's threads posting.
test_each_tenant_lands_in_its_own_database = \
    path.test_each_tenant_lands_in_its_own_database
test_points_read_back_as_monasca_api_expects = \
    path.test_points_read_back_as_monasca_api_expects
test_alarm_history_lands_in_the_tenant_database = \
    path.test_alarm_history_lands_in_the_tenant_database
test_database_dropped_mid_run_is_created_again = \
    path.test_database_dropped_mid_run_is_created_again
test_points_beyond_retention_are_counted_and_the_rest_written = \
    path.test_points_beyond_retention_are_counted_and_the_rest_written
test_field_type_conflict_drops_only_the_conflicting_points = \
    path.test_field_type_conflict_drops_only_the_conflicting_points
test_whole_request_refusals_are_split_to_keep_valid_lines = \
    path.test_whole_request_refusals_are_split_to_keep_valid_lines
test_influxdb_back_within_the_bound_loses_nothing = \
    path.test_influxdb_back_within_the_bound_loses_nothing
test_tenants_on_another_server_are_written_there_and_isolated = \
    path.test_tenants_on_another_server_are_written_there_and_isolated
test_without_a_spill_a_down_server_delays_only_its_tenants = \
    path.test_without_a_spill_a_down_server_delays_only_its_tenants
test_with_the_spill_a_down_servers_points_are_stored_and_replayed = \
    path.test_with_the_spill_a_down_servers_points_are_stored_and_replayed
two_servers = path.two_servers


def _round(repo, round_no, tenants=20, per=5):
    records.feed(repo, [
        records.metric('wp%d' % t, timestamp=NOW - round_no * 1000 - i,
                       value=float(i))
        for t in range(tenants) for i in range(per)])


def test_writes_are_posted_by_the_child(on_conf, influx):
    repo = MetricsRepository(on_conf)
    for n in range(3):
        _round(repo, n)
    poster = repo.buffers.poster
    assert poster is not None and poster.answered >= 20
    for t in range(20):
        assert path._count(influx, 'mon_wp%d' % t) == 15
    assert repo.stats.total('points_written') == 300


def test_a_killed_child_loses_nothing_and_marks_no_server_down(
        on_conf, influx):
    repo = MetricsRepository(on_conf)
    _round(repo, 0)
    poster = repo.buffers.poster
    first = poster.child_pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    for n in range(1, 4):
        _round(repo, n)
    servers.wait_for(lambda: poster.child_pid not in (None, first), 60,
                     'a new write process')
    _round(repo, 4)
    for t in range(20):
        assert path._count(influx, 'mon_wp%d' % t) == 25
    assert not repo.writer.down_since
    assert poster.restarts >= 1


def test_switched_off_no_child_is_started(influx_conf, influx):
    repo = MetricsRepository(influx_conf)
    _round(repo, 0)
    assert repo.buffers.poster is None
    for t in range(20):
        assert path._count(influx, 'mon_wp%d' % t) == 5


def _fake_python(tmp_path, script):
    path_ = tmp_path / 'python'
    path_.write_text('#!/bin/sh\n%s\n' % script)
    path_.chmod(0o755)
    return str(path_)


@pytest.mark.parametrize('script', ['exit 3', 'exec sleep 600'],
                         ids=['exits', 'hangs'])
def test_a_child_that_never_answers_is_given_up_and_nothing_is_lost(
        on_conf, influx, tmp_path, monkeypatch, script):
    from monasca_persister_dbpt.influx import write_process
    monkeypatch.setattr(write_process.sys, 'executable',
                        _fake_python(tmp_path, script))
    monkeypatch.setattr(write_process, 'GRACE', 0.5)
    on_conf.set_override('request_timeout', 0.5, 'dbpt')
    repo = MetricsRepository(on_conf)
    poster = repo.buffers.poster
    _round(repo, 0)      # creates the databases: the worker's own path
    n = 1
    while poster.usable and n < 60:
        _round(repo, n)
        n += 1
    assert not poster.usable
    assert poster.started == write_process.START_ATTEMPTS
    _round(repo, n)
    for t in range(20):
        assert path._count(influx, 'mon_wp%d' % t) == 5 * (n + 1)
    assert not repo.writer.down_since
    assert poster.answered == 0
