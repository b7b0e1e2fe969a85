"""A down server delays only its tenants: holding, replay, commit pause."""

import dataclasses
import threading
import time

import pytest

from monasca_persister_dbpt import commit_guard
from monasca_persister_dbpt.backlog import Backlog
from monasca_persister_dbpt.influx import writer as writer_mod
from monasca_persister_dbpt.influx.writer import InfluxWriter, ServerDown
from monasca_persister_dbpt.influx.writer import WriteFailed
from monasca_persister_dbpt.placement import PlacementMap, Server
from monasca_persister_dbpt.repositories.batch import TenantBatch
from monasca_persister_dbpt.stats import Stats

DOWN = Server('192.0.2.1', 8086)


def _placement(tenant, server=None):
    placement = PlacementMap().place(tenant)
    return dataclasses.replace(placement, server=server) if server \
        else placement


class ServerThatComesBack:
    """Writer stand-in: fails until ``up`` is set, records what it wrote."""

    backoff_max = 0.01

    def __init__(self):
        self.up = threading.Event()
        self.written = []
        self.synchronous = []

    def write(self, placement, lines, precision='ms', retry_for=None,
              fail_fast=True):
        if threading.current_thread().name != 'dbpt-replay':
            self.synchronous.append(list(lines))
        if not self.up.is_set():
            time.sleep(0.005)
            raise WriteFailed('still down')
        self.written.append((placement.tenant_id, list(lines)))


def _wait(check, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.01)
    return check()


def test_held_points_are_replayed_in_order_once_the_server_answers():
    writer = ServerThatComesBack()
    backlog = Backlog(writer, max_points=100, stats=Stats(interval=0))
    backlog.hold([(_placement('a', DOWN), ['a1', 'a2'], ServerDown('x')),
                  (_placement('b', DOWN), ['b1'], ServerDown('x'))])
    backlog.hold([(_placement('a', DOWN), ['a3'], ServerDown('x'))])
    assert backlog.held() == 4 and backlog.holding()
    time.sleep(0.1)
    assert writer.written == [] and backlog.held() == 4
    writer.up.set()
    assert _wait(lambda: not backlog.holding())
    assert writer.written == [('a', ['a1', 'a2']), ('b', ['b1']),
                              ('a', ['a3'])]
    assert writer.synchronous == []


def test_points_that_do_not_fit_are_written_with_the_full_bound():
    writer = ServerThatComesBack()
    backlog = Backlog(writer, max_points=2, stats=Stats(interval=0))
    backlog.hold([(_placement('a', DOWN), ['a1', 'a2'], ServerDown('x'))])
    with pytest.raises(WriteFailed, match='still down'):
        backlog.hold([(_placement('b', DOWN), ['b1'], ServerDown('x'))])
    assert writer.synchronous == [['b1']]
    assert backlog.held() == 2
    writer.up.set()
    assert _wait(lambda: not backlog.holding())


def test_a_failure_that_is_not_a_write_failure_is_raised_not_held():
    backlog = Backlog(ServerThatComesBack(), 10, Stats(interval=0))
    with pytest.raises(KeyError):
        backlog.hold([(_placement('a'), ['a1'], KeyError('bug'))])
    assert not backlog.holding()


class FailingWriter:
    def __init__(self, failing_tenants):
        self.failing = failing_tenants
        self.retry_for = []

    def submit(self, placement, lines, retry_for=None):
        raise AssertionError('not pipelined in these tests')

    def write_all(self, chunks, pending=(), retry_for=None):
        self.retry_for.append(retry_for)
        return [(p, lines, ServerDown('InfluxDB at %s is down' % p.server.url))
                for p, lines in chunks if p.tenant_id in self.failing]


def test_batch_hands_a_down_servers_chunks_to_the_backlog_and_returns():
    writer = FailingWriter({'b'})
    held = []

    class Recorder:
        def hold(self, failures):
            held.extend((p.tenant_id, lines) for p, lines, _ in failures)
    batch = TenantBatch(PlacementMap(), writer, chunk_size=10,
                        backlog=Recorder(), hold_after=2.5)
    for tenant in 'abab':
        batch.append(tenant, 'line ' + tenant)
    batch.flush()
    assert held == [('b', ['line b', 'line b'])]
    assert writer.retry_for == [2.5]


def test_batch_without_backlog_fails_whole_and_uses_the_full_bound():
    writer = FailingWriter({'b'})
    batch = TenantBatch(PlacementMap(), writer, chunk_size=10)
    batch.append('a', 'line a')
    batch.append('b', 'line b')
    with pytest.raises(WriteFailed, match='1 of 2 writes failed.*is down'):
        batch.flush()
    assert writer.retry_for == [None]


def _transient():
    raise writer_mod._Transient(None, 'connection refused')


def test_a_bounded_write_marks_the_server_down_and_later_ones_fail_fast():
    writer = InfluxWriter(retry_timeout=30, backoff_max=0.01)
    calls = []

    def refused():
        calls.append(1)
        _transient()
    with pytest.raises(ServerDown, match='connection refused'):
        writer.retrying(DOWN, 'writing', refused, retry_for=0.05)
    assert writer.is_down(DOWN)
    before = len(calls)
    with pytest.raises(ServerDown, match='is down'):
        writer.retrying(DOWN, 'writing', refused, retry_for=30)
    assert len(calls) == before  # not even tried
    # An unbounded call (the replay) still tries, and success clears it.
    assert writer.retrying(DOWN, 'writing', lambda: 'ok') == 'ok'
    assert not writer.is_down(DOWN)
    writer.close()


def test_unbounded_failure_does_not_mark_the_server_down():
    writer = InfluxWriter(retry_timeout=0.05, backoff_max=0.01)
    with pytest.raises(WriteFailed) as info:
        writer.retrying(DOWN, 'writing', _transient)
    assert not isinstance(info.value, ServerDown)
    assert not writer.is_down(DOWN)
    writer.close()


class _LibConsumer:
    def __init__(self):
        self.calls = 0

    def commit(self, **kwargs):
        self.calls += 1


def test_commits_pause_while_points_are_held_and_resume_after(monkeypatch):
    held = [True]
    monkeypatch.setattr(commit_guard, '_skipped', False)
    monkeypatch.setattr(commit_guard, '_pause_check', None)
    commit_guard.pause_while(lambda: held[0])
    host = type('Host', (), {})()
    host._consumer = _LibConsumer()
    commit_guard._guarded_commit(host)
    commit_guard._guarded_commit(host)
    assert host._consumer.calls == 0
    assert not commit_guard.commit_owed()
    held[0] = False
    assert commit_guard.commit_owed()
    commit_guard._guarded_commit(host)
    assert host._consumer.calls == 1 and not commit_guard.commit_owed()


def test_an_empty_batch_asks_for_a_flush_when_a_commit_is_owed(monkeypatch):
    monkeypatch.setattr(commit_guard, 'commit_owed', lambda: True)
    batch = TenantBatch(PlacementMap(), FailingWriter(set()), 10,
                        backlog=object(), hold_after=1)
    assert batch and batch.get_count() == 0
    assert not TenantBatch(PlacementMap(), FailingWriter(set()), 10)
