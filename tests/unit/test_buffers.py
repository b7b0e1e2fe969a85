"""Tenant buffers and the low watermark, with a writer stand-in."""

import concurrent.futures
import logging
import threading
import time

import pytest

from monasca_persister_dbpt.commits.buffers import TenantBuffers
from monasca_persister_dbpt.commits.watermark import Ticket, Watermark
from monasca_persister_dbpt.influx.writer import ServerDown, WriteFailed
from monasca_persister_dbpt.placement import PlacementMap
from monasca_persister_dbpt.repositories.batch import TenantBatch
from monasca_persister_dbpt.repositories.metrics import MetricsRepository
from monasca_persister_dbpt.stats import Stats
from tests import hostile
from tests import records

P0, P1 = ('metrics', 0), ('metrics', 1)


class Writer:
    """Writes into a list; tenants in ``down`` fail until taken out."""

    retry_timeout = 1.0
    backoff_max = 0.02

    def __init__(self):
        self.written = []
        self.requests = []
        self.down = set()
        self.bug = set()
        self.submitted = 0
        self._pool = concurrent.futures.ThreadPoolExecutor(4)
        self.lock = threading.Lock()

    def submit_call(self, call, *args):
        self.submitted += 1
        return self._pool.submit(call, *args)

    def is_down(self, server):
        return bool(self.down)

    def write(self, placement, lines, retry_for=None, fail_fast=True):
        if placement.tenant_id in self.bug:
            self.bug.discard(placement.tenant_id)
            raise KeyError('a bug')
        if placement.tenant_id in self.down:
            time.sleep(0.005)
            raise ServerDown('down')
        with self.lock:
            self.requests.append((placement.tenant_id, len(lines)))
            self.written.extend((placement.tenant_id, line) for line in lines)


def _buffers(writer, **kw):
    args = dict(chunk_points=100, coalesce_points=5, max_delay=0.0,
                buffered_max=1000, held_max=1000, hold_after=0.1)
    args.update(kw)
    return TenantBuffers(PlacementMap(), writer, Stats(interval=0), **args)


def _wait(check, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.01)
    return check()


def test_a_tenant_is_written_in_one_request_once_it_has_coalesce_points():
    writer = Writer()
    buffers = _buffers(writer, max_delay=60.0)
    for i in range(12):
        buffers.add('busy', 'b%d' % i)
    buffers.add('quiet', 'q0')
    assert _wait(lambda: len(writer.written) == 10)
    assert writer.requests == [('busy', 5), ('busy', 5)]
    assert buffers.buffered() == 3  # 2 of busy, 1 of quiet, not due yet


def test_a_quiet_tenant_is_written_after_max_delay_by_the_timer():
    writer = Writer()
    buffers = _buffers(writer, max_delay=0.2, coalesce_points=1000)
    buffers.add('quiet', 'q0')
    buffers.flush(everything=False)  # starts the timer, writes nothing due
    assert writer.written == []
    start = time.monotonic()
    assert _wait(lambda: writer.written == [('quiet', 'q0')], 5)
    assert time.monotonic() - start >= 0.1


def test_without_coalescing_a_flush_writes_and_waits_for_everything():
    writer = Writer()
    buffers = _buffers(writer, coalesce_points=1000)
    tickets = [buffers.add('t%d' % (i % 3), 'l%d' % i) for i in range(9)]
    buffers.flush(everything=True)
    assert len(writer.written) == 9 and all(t.done for t in tickets)
    assert buffers.buffered() == 0


def test_the_watermark_never_passes_a_record_not_yet_written():
    mark = Watermark()
    a, b = Ticket(), Ticket()
    mark.track(P0, 10, a)
    mark.track(P0, 11, b)
    mark.skip(P0, 12)          # refused: nothing to wait for
    mark.track(P1, 5, b)
    assert mark.offsets() == {P0: 10, P1: 5}
    b.done = True              # later ticket first: still held by a
    assert mark.offsets() == {P0: 10, P1: 6}
    a.done = True
    assert mark.offsets() == {P0: 13, P1: 6}
    assert mark.owed()
    mark.committed(mark.offsets())
    assert not mark.owed() and mark.lag() == 0
    mark.reset([P0])
    assert mark.offsets() == {P1: 6}


def test_a_down_server_holds_only_its_records_back_and_replays_in_order():
    writer = Writer()
    buffers = _buffers(writer, coalesce_points=1000)
    mark = Watermark()
    writer.down.add('b')
    for offset, tenant in enumerate('abab'):
        mark.track(P0 if tenant == 'a' else P1, offset,
                   buffers.add(tenant, '%s%d' % (tenant, offset)))
    buffers.flush(everything=True)
    assert [t for t, _ in writer.written] == ['a', 'a']
    assert buffers.holding() and buffers.held() == 2
    # a's partition is committed past its records; b's waits at its first.
    assert mark.offsets() == {P0: 3, P1: 1}
    buffers.add('b', 'b9')     # more points of b join the held ones
    writer.down.clear()
    assert _wait(lambda: buffers.flush(everything=True) or
                 not buffers.holding())
    assert [line for t, line in writer.written if t == 'b'] == \
        ['b1', 'b3', 'b9']
    assert mark.offsets() == {P0: 3, P1: 4}
    assert buffers.held() == 0


def test_held_points_past_their_bound_fail_the_batch_after_the_timeout():
    writer = Writer()
    buffers = _buffers(writer, coalesce_points=1000, held_max=2)
    writer.down.add('b')
    for i in range(3):
        buffers.add('b', 'b%d' % i)
    with pytest.raises(WriteFailed, match='held_points_max 2'):
        buffers.flush(everything=True)


def test_too_many_buffered_points_make_the_host_wait_then_fail():
    writer = Writer()
    writer.down.add('a')
    buffers = _buffers(writer, coalesce_points=1000, buffered_max=4,
                       held_max=1000)
    for i in range(4):
        buffers.add('a', 'a%d' % i)
    buffers.flush(everything=True)  # a is held now
    with pytest.raises(WriteFailed, match='buffered_points_max 4'):
        buffers.add('a', 'a4')


def test_without_held_points_a_failed_write_fails_the_flush():
    writer = Writer()
    writer.down.add('a')
    buffers = _buffers(writer, coalesce_points=1000, hold_after=None)
    buffers.add('a', 'a0')
    with pytest.raises(WriteFailed):
        buffers.flush(everything=True)


def test_an_unexpected_error_keeps_the_points_for_the_next_try(caplog):
    writer = Writer()
    writer.bug.add('a')
    buffers = _buffers(writer, coalesce_points=1000)
    ticket = buffers.add('a', 'a0')
    with caplog.at_level(logging.ERROR):
        buffers.flush(everything=True)
    assert not ticket.done and 'a bug' in caplog.text
    assert _wait(lambda: buffers.flush(everything=True) or ticket.done)
    assert writer.written == [('a', 'a0')]


def test_the_driver_tracks_each_accepted_record_and_skips_refused_ones(conf):
    conf.set_override('max_delay', 60.0, 'dbpt')
    repo = MetricsRepository(conf)
    writer = Writer()
    repo.buffers._writer = writer
    batch = repo.data_points_class()
    payloads = [records.encode(records.metric('t', timestamp=1 + i))
                for i in range(3)]
    payloads.insert(1, hostile.METRICS[0][0])
    for offset, payload in enumerate(payloads):
        line, tenant = repo.process_message(records.Message(payload, offset))
        batch.append(tenant, line)
    assert batch.get_count() == 3
    # Nothing written yet: the commit stays before the first record.
    assert repo.watermark.offsets() == {P0: 0}
    repo.write_batch(batch)
    assert writer.written == []
    repo.buffers.flush(everything=True)
    assert repo.watermark.offsets() == {P0: 4}
    assert len(writer.written) == 3


def test_write_batch_accepts_the_hosts_dict_container(conf):
    from monasca_persister.repositories.data_points import DataPointsAsDict
    repo = MetricsRepository(conf)
    writer = Writer()
    repo.buffers._writer = writer
    points = DataPointsAsDict()
    points.append('t1', 'm v=1 1')
    points.append('t2', 'm v=1 2')
    repo.write_batch(points)
    assert sorted(t for t, _ in writer.written) == ['t1', 't2']


def test_an_empty_batch_asks_for_a_flush_while_a_commit_is_owed(conf):
    from monasca_persister_dbpt.commits import guard
    repo = MetricsRepository(conf)
    batch = TenantBatch(repo.buffers, repo.watermark, [None, None])
    guard.use(repo.watermark)
    assert not batch
    repo.watermark.skip(P0, 7)
    assert batch
    repo.watermark.committed(repo.watermark.offsets())
    assert not batch


def test_points_added_while_their_tenant_is_written_are_written_too():
    writer = Writer()
    gate = threading.Event()
    real = writer.write

    def slow(placement, lines, **kw):
        gate.wait(5)
        real(placement, lines, **kw)
    writer.write = slow
    buffers = _buffers(writer, coalesce_points=2)
    buffers.add('a', 'a0')
    buffers.add('a', 'a1')          # ships; the write waits at the gate
    buffers.add('a', 'a2')          # comes in meanwhile
    threading.Timer(0.2, gate.set).start()
    buffers.flush(everything=True)  # without coalescing: all of it
    assert [line for _, line in writer.written] == ['a0', 'a1', 'a2']
    assert buffers.buffered() == 0


def test_a_failure_written_since_fails_no_later_flush():
    """Without held points a failed write fails the next flush, unless its
    points were written before it: then nothing is lost and nothing ends."""
    writer = Writer()
    buffers = _buffers(writer, hold_after=None, max_delay=0.05,
                       coalesce_points=100)
    writer.down.add('t')
    buffers.add('t', 'a')
    buffers.flush(everything=False)     # the host's flush: starts the timer
    assert _wait(lambda: buffers._failed is not None)
    writer.down.clear()
    # The timer writes the kept point by its age.
    assert _wait(lambda: writer.written == [('t', 'a')])
    buffers.add('t', 'b')
    buffers.flush(everything=True)      # does not raise
    assert writer.written == [('t', 'a'), ('t', 'b')]


def test_a_down_servers_points_are_spilled_and_their_records_committable(
        tmp_path):
    from monasca_persister_dbpt.commits.spill import Spill
    writer = Writer()
    spill = Spill(str(tmp_path), 10 ** 7)
    buffers = _buffers(writer, spill=spill)
    writer.down.add('t')
    tickets = [buffers.add('t', 'p%d' % i) for i in range(5)]
    # Spilled, so done: the watermark may pass their records.
    assert _wait(lambda: all(t.done for t in tickets))
    assert buffers.held() == 0 and writer.written == []
    later = buffers.add('t', 'p5')       # joins the spill, in order
    buffers.flush(everything=True)
    assert later.done and writer.written == []
    writer.down.clear()
    assert _wait(lambda: len(writer.written) == 6)
    assert writer.written == [('t', 'p%d' % i) for i in range(6)]
    assert _wait(lambda: not spill.pending(PlacementMap().place('t').server))


def test_points_added_while_a_first_write_fails_are_counted_as_held():
    gate = threading.Event()

    class Slow(Writer):
        def write(self, placement, lines, retry_for=None, fail_fast=True):
            gate.wait(10)
            return super().write(placement, lines, retry_for, fail_fast)
    writer = Slow()
    writer.down.add('t')
    buffers = _buffers(writer, coalesce_points=3)
    for i in range(3):
        buffers.add('t', 'p%d' % i)     # shipped: its write hangs, fails
    for i in range(3, 5):
        buffers.add('t', 'p%d' % i)     # added meanwhile
    gate.set()
    assert _wait(lambda: buffers.holding())
    assert _wait(lambda: buffers._stats.total('points_held') == 5)
    assert buffers.held() == 5


def test_a_tenants_points_are_written_on_request_before_a_series_count():
    """written() ships a coalescing tenant at once and returns once it is
    stored; a down tenant's held points make it answer False at once."""
    writer = Writer()
    buffers = _buffers(writer, max_delay=60.0, coalesce_points=1000)
    buffers.add('capped', 'c0')
    buffers.add('other', 'o0')
    assert buffers.written('capped', 5)
    assert writer.written == [('capped', 'c0')]  # only its own
    assert buffers.written('never-seen', 0)
    writer.down.add('down')
    buffers.add('down', 'd0')
    assert buffers.written('down', 0.5) is False
    assert _wait(lambda: buffers.held() == 1)
    with buffers._lock:  # its next retry far away: nothing else ships it
        held = buffers._buffers['down']
        assert buffers._lock.wait_for(lambda: not held.busy, 10)
        held.retry_at = time.monotonic() + 3600
    tried = writer.submitted

    def waited(timeout=None):
        raise AssertionError('written() waited for held points')
    buffers._lock.wait = waited
    assert buffers.written('down', 30) is False  # held: not waited for
    assert writer.submitted == tried  # nor tried past its backoff


def test_over_the_bound_the_largest_buffers_are_written_a_little_at_a_time():
    """With many tenants the bound, not coalesce_points, decides how big
    requests are: writing the largest buffers a fifth of the bound at a
    time lets each grow towards twice its even share (here 17.2 points a
    request on average, for an even share of 10; 18.2 a tenth at a time),
    where writing half of them at once gave 14.5."""
    writer = Writer()
    tenants = ['t%02d' % n for n in range(50)]
    buffers = _buffers(writer, coalesce_points=10 ** 6, max_delay=60.0,
                       buffered_max=500)   # an even share is 10 points
    for n in range(100 * len(tenants)):
        buffers.add(tenants[n % len(tenants)], 'm v=%d %d' % (n, n))
    requests = list(writer.requests)   # the ones the bound made
    buffers.flush(True)
    assert len(writer.written) == 100 * len(tenants)
    sizes = sorted(size for _, size in requests)
    assert sum(sizes) / len(sizes) >= 16, sizes


def _mixed_messages():
    """Two partitions, three tenants interleaved, a refused record."""
    out = []
    for i in range(30):
        tenant = 't%d' % (i % 3)
        payload = records.encode(records.metric(tenant, timestamp=1 + i))
        if i == 7:
            payload = hostile.METRICS[0][0]
        out.append(records.Message(payload, offset=100 + i // 2,
                                   partition=i % 2))
    return out


def test_a_batch_taken_whole_buffers_and_tracks_as_one_message_a_time(conf):
    from monasca_persister_dbpt.commits.consumer import Messages
    conf.set_override('max_delay', 60.0, 'dbpt')
    conf.set_override('coalesce_points', 1000, 'dbpt')
    one, whole = MetricsRepository(conf), MetricsRepository(conf)
    for repo in (one, whole):
        repo.buffers._writer = Writer()
    batch = one.data_points_class()
    for message in _mixed_messages():
        line, tenant = one.process_message(message)
        batch.append(tenant, line)
    whole.data_points_class()
    whole.process_message(Messages(_mixed_messages()))

    def contents(repo):
        # A tenant's lines of one partition keep their order; between
        # partitions Kafka promises none.
        return {t: sorted(b.lines, key=lambda line: int(line.rsplit(' ')[-1]))
                for t, b in repo.buffers._buffers.items()}
    assert contents(whole) == contents(one)
    assert sorted(contents(whole)) == ['t0', 't1', 't2']
    assert sum(map(len, contents(whole).values())) == 29
    # Nothing written: both commit no further than the first record.
    assert whole.watermark.offsets() == one.watermark.offsets() == {
        P0: 100, P1: 100}
    for repo in (one, whole):
        repo.buffers.flush(everything=True)
    assert whole.watermark.offsets() == one.watermark.offsets() == {
        P0: 115, P1: 115}


def test_put_many_ships_full_and_urgent_tenants_and_counts_held_points():
    writer = Writer()
    buffers = _buffers(writer, max_delay=60.0)
    buffers.urgent.add('urgent')
    tickets = buffers.put_many([('full', ['f%d' % i for i in range(5)]),
                                ('some', ['s0', 's1']),
                                ('urgent', ['u0'])])
    assert [type(t) for t in tickets] == [Ticket] * 3
    assert _wait(lambda: len(writer.written) == 6)
    assert sorted(writer.requests) == [('full', 5), ('urgent', 1)]
    assert tickets[0].done and tickets[2].done and not tickets[1].done
    assert buffers.buffered() == 2
    # A tenant whose server does not take its points: they join its held
    # points, counted as held, and are not shipped again meanwhile.
    writer.down.add('down')
    buffers.put_many([('down', ['d%d' % i for i in range(5)])])
    assert _wait(lambda: buffers._buffers['down'].held)
    buffers.put_many([('down', ['d5', 'd6'])])
    assert buffers._stats.total('points_held') >= 7
    writer.down.clear()
    buffers.flush(everything=True)
    assert sorted(line for t, line in writer.written if t == 'down') == [
        'd%d' % i for i in range(7)]


def test_track_many_is_track_for_each_entry():
    one, many = Watermark(), Watermark()
    entries = [(P0, 3, Ticket()), (P0, 5, Ticket()), (P1, 1, Ticket()),
               (P1, 2, Ticket())]
    for entry in entries:
        one.track(*entry)
    many.track_many(entries)
    assert many.offsets() == one.offsets() == {P0: 3, P1: 1}
    entries[0][2].done = True
    entries[2][2].done = True
    assert many.offsets() == one.offsets() == {P0: 5, P1: 2}
    entries[1][2].done = entries[3][2].done = True
    assert many.offsets() == one.offsets() == {P0: 6, P1: 3}


def test_a_closed_buffers_timer_ends_and_writes_nothing_more():
    writer = Writer()
    buffers = _buffers(writer, max_delay=0.05)
    buffers.add('t', 'a0')
    buffers.flush(everything=False)  # the host's flush starts the timer
    assert _wait(lambda: writer.written == [('t', 'a0')])
    buffers.close()
    buffers._timer.join(30)
    assert not buffers._timer.is_alive()
    buffers.put('t', ('a1',))  # due by age, and no timer to write it
    assert writer.written == [('t', 'a0')]


def test_put_many_ships_a_tenant_as_put_would_when_it_comes_twice():
    """A tenant's points of two partitions are two groups: the first fills
    its buffer and is written alone, the second waits under a ticket of
    its own, as two puts would have it (and the functional tests expect)."""
    writer = Writer()
    buffers = _buffers(writer, max_delay=60.0)
    tickets = buffers.put_many([('twice', ['a%d' % i for i in range(5)]),
                                ('twice', ['b0', 'b1'])])
    assert tickets[0] is not tickets[1]
    assert _wait(lambda: tickets[0].done)
    assert writer.requests == [('twice', 5)]
    assert not tickets[1].done and buffers.buffered() == 2


def test_long_lines_lower_the_points_bound_to_what_the_memory_budget_holds():
    """Points of 16 KiB lines: a budget of 1 MiB holds about 64 of them,
    far below buffered_points_max; the largest buffers are written so that
    no more than that is ever kept, and nothing is lost."""
    writer = Writer()
    tenants = ['t%02d' % n for n in range(20)]
    buffers = _buffers(writer, coalesce_points=10 ** 6, max_delay=60.0,
                       buffered_max=10 ** 6, buffered_bytes=2 ** 20)
    long_value = 'x' * (16 * 1024)
    most = -1
    for n in range(4000):
        buffers.add(tenants[n % len(tenants)],
                    'm,d=%s v=%d %d' % (long_value, n, n))
        # Over the bound the host waits for room: what is kept is within
        # the bound as it stands (it falls while the mean follows).
        most = max(most, buffers.buffered() - buffers.memory.bound)
    buffers.flush(True)
    assert len(writer.written) == 4000
    bound = buffers.memory.bound
    assert 50 <= bound <= 70, bound
    assert most <= 0, most


def test_usual_lines_keep_the_points_bound_under_the_default_budget():
    writer = Writer()
    buffers = _buffers(writer, coalesce_points=10 ** 6, max_delay=60.0,
                       buffered_max=200000, buffered_bytes=64 * 2 ** 20)
    groups = [('t%d' % n, ['cpu,hostname=h%d,service=monitoring value=%d.0 '
                           '%d' % (n, n, n) + ' ' * 100]) for n in range(500)]
    buffers.put_many(groups)
    assert buffers.memory.bound == 200000
    buffers.flush(True)
    assert len(writer.written) == 500


def test_the_sampled_point_size_follows_a_change_of_line_lengths():
    from monasca_persister_dbpt.commits.memory import PointMemory
    memory = PointMemory(points_max=10 ** 9, budget_bytes=2 ** 30)
    short = [('t', ['a' * 100])] * 64
    for _ in range(100):
        memory.observe(short)
    assert 140 <= memory.mean <= 160, memory.mean
    high = memory.bound
    long_ = [('t', ['a' * 10000])] * 64
    for _ in range(100):
        memory.observe(long_)
    assert 9000 <= memory.mean <= 10100, memory.mean
    assert memory.bound < high / 50


def test_replicas_of_a_point_share_its_line_in_the_memory_bound():
    from monasca_persister_dbpt.commits.memory import PointMemory
    one = PointMemory(points_max=10 ** 9, budget_bytes=2 ** 20, copies=1)
    two = PointMemory(points_max=10 ** 9, budget_bytes=2 ** 20, copies=2)
    for memory in (one, two):
        for _ in range(50):
            memory.observe([('t', ['a' * 1000])] * 16)
    # Counted per copy, as the buffers count points: nearly twice the
    # points, not half.
    assert 1.9 * one.bound <= two.bound <= 2 * one.bound


def test_waiting_for_room_past_the_memory_bound_names_the_budget():
    writer = Writer()
    writer.down.add('a')
    buffers = _buffers(writer, coalesce_points=1000, buffered_max=1000,
                       held_max=1000, buffered_bytes=64 * 1024)
    line = 'm,d=%s v=1 1' % ('x' * 16 * 1024)
    for _ in range(20):   # the sizes of batches of these lines
        buffers.memory.observe([('b', [line])] * 64)
    for _ in range(3):
        buffers.add('a', line)
    buffers.flush(everything=True)  # a is held now
    with pytest.raises(WriteFailed, match=r'buffered_points_max 1000, or 3 '
                       r'at \d+ bytes a point within buffered_memory_mb'):
        buffers.add('a', line)
