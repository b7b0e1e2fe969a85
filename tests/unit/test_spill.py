"""The spill on its own: durable appends, replay in order once the server
answers, resumption from the recorded position, adoption of what a worker
that ended left, a torn last line, the bound."""

import os

import pytest

from monasca_persister_dbpt.commits.spill import Spill, SpillUnusable
from monasca_persister_dbpt.commits.spill import server_key
from monasca_persister_dbpt.influx.writer import ServerDown
from monasca_persister_dbpt.placement import PlacementMap, Server

DOWN = Server('10.0.0.9', 8086)


class Writer:
    """Takes writes while ``up``; records them in order."""

    def __init__(self, up=True):
        self.up = up
        self.written = []

    def write(self, placement, lines, retry_for=None, fail_fast=True):
        if not self.up:
            raise ServerDown('InfluxDB at %s is down' % placement.server.url)
        self.written.extend((placement.tenant_id, line) for line in lines)


def _placements():
    return PlacementMap(server=DOWN)


def _replay_all(spill, writer):
    for _ in range(100):
        spill._retry_at.clear()
        spill.replay(writer, _placements(), 0.01)
        if not spill.pending(DOWN):
            return


def test_points_wait_on_disk_and_are_written_in_order_once_the_server_answers(
        tmp_path):
    spill = Spill(str(tmp_path), 10 ** 7)
    assert not spill.pending(DOWN)
    for i in range(5):
        assert spill.append(DOWN, 't%d' % (i % 2), ['m v=%d %d' % (i, i)])
    assert spill.pending(DOWN)
    assert spill.waiting()[DOWN.url]['points'] == 5
    writer = Writer(up=False)
    assert spill.replay(writer, _placements(), 0.01) == 0
    assert spill.pending(DOWN) and writer.written == []
    writer.up = True
    _replay_all(spill, writer)
    # Each tenant's points in the order they came.
    for tenant in ('t0', 't1'):
        assert [line for t, line in writer.written if t == tenant] == [
            'm v=%d %d' % (i, i) for i in range(5) if 't%d' % (i % 2) ==
            tenant]
    assert len(writer.written) == 5
    assert not spill.pending(DOWN) and spill.used_bytes == 0
    assert not [p for p in os.listdir(tmp_path / server_key(DOWN))
                if p.endswith('.spill')]


def test_what_a_worker_that_ended_left_is_adopted_and_resumed(tmp_path):
    first = Spill(str(tmp_path), 10 ** 7)
    for i in range(3):
        first.append(DOWN, 'a', ['m v=%d %d' % (i, i)])
    # Half replayed, then the worker ends (its locks go with it).
    segment = first._segments[server_key(DOWN)][0]
    with open(segment.path, 'rb') as handle:
        one = len(handle.readline())
    from monasca_persister_dbpt.commits import spill as module
    module._write_pos(segment.path, one)
    # A torn last line: written, never fsynced nor committed.
    with open(segment.path, 'ab') as handle:
        handle.write(b'123.0\ta\tm v=99')
    first.close()
    second = Spill(str(tmp_path), 10 ** 7)
    assert second.pending(DOWN)
    assert second.waiting()[DOWN.url]['points'] == 2
    writer = Writer()
    _replay_all(second, writer)
    assert writer.written == [('a', 'm v=1 1'), ('a', 'm v=2 2')]
    assert not second.pending(DOWN)


def test_a_live_workers_segments_are_left_to_it(tmp_path):
    live = Spill(str(tmp_path), 10 ** 7)
    live.append(DOWN, 'a', ['m v=1 1'])
    other = Spill(str(tmp_path), 10 ** 7)
    assert not other.pending(DOWN)
    writer = Writer()
    _replay_all(other, writer)
    assert writer.written == []
    _replay_all(live, writer)
    assert writer.written == [('a', 'm v=1 1')]


def test_a_full_spill_refuses_and_says_so(tmp_path, caplog):
    spill = Spill(str(tmp_path), 64)
    assert spill.append(DOWN, 'a', ['m v=1 1'])
    assert not spill.append(DOWN, 'a', ['m v=%d 1' % i for i in range(10)])
    assert 'spill_max_bytes' in caplog.text


def test_a_folder_that_cannot_be_written_is_named(tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('x')
    with pytest.raises(SpillUnusable, match=r'\[dbpt\] spill_dir'):
        Spill(str(blocker / 'spill'), 10 ** 7)


def test_spilled_points_of_a_tenant_blocked_since_are_refused_not_written(
        tmp_path, monkeypatch):
    from monasca_persister_dbpt.placement import overrides as overrides_mod
    from monasca_persister_dbpt.stats import Stats
    monkeypatch.setattr(overrides_mod, 'CHECK_EVERY', 0)
    spill = Spill(str(tmp_path / 'spill'), 10 ** 7)
    for i in range(4):
        assert spill.append(DOWN, ('gone', 'kept')[i % 2], ['m v=%d %d'
                                                            % (i, i)])
    path = tmp_path / 'overrides'
    path.write_text('gone blocked=true\n')
    placements = PlacementMap(server=DOWN, overrides_file=str(path))
    writer = Writer()
    writer.stats = Stats(interval=0)
    for _ in range(100):
        spill._retry_at.clear()
        spill.replay(writer, placements, 0.01)
        if not spill.pending(DOWN):
            break
    assert writer.written == [('kept', 'm v=1 1'), ('kept', 'm v=3 3')]
    assert writer.stats.tenant('gone') == {'refused_blocked': 2}
    assert not spill.pending(DOWN)
