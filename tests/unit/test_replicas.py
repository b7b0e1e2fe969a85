"""Replicas: placement on R servers, one buffer per replica, commits that
wait for every replica that is up, and stale ranges for one that is not."""

import concurrent.futures
import threading
import time

import pytest

from monasca_persister_dbpt.commits.buffers import TenantBuffers
from monasca_persister_dbpt.commits.stale_ranges import span_ns
from monasca_persister_dbpt.commits.watermark import JointTicket, Ticket
from monasca_persister_dbpt.commits.watermark import may_abandon
from monasca_persister_dbpt.influx.writer import ServerDown
from monasca_persister_dbpt.placement import InvalidOption, PlacementMap
from monasca_persister_dbpt.placement import Server
from monasca_persister_dbpt.placement import stale
from monasca_persister_dbpt.stats import Stats

SERVERS = {'a': Server('10.0.0.1'), 'b': Server('10.0.0.2'),
           'c': Server('10.0.0.3'), 'd': Server('10.0.0.4')}


def _map(replicas=2, hash_servers=('a', 'b', 'c'), **kw):
    return PlacementMap(servers=SERVERS, hash_servers=hash_servers,
                        replicas=replicas, **kw)


def test_each_tenant_has_r_distinct_servers_with_its_hashed_server_first():
    one, two = _map(replicas=1), _map(replicas=2)
    for n in range(300):
        tenant = 't%d' % n
        servers = two.place(tenant).servers
        assert len(set(servers)) == 2
        assert servers[0] == one.place(tenant).server
        assert [c.server for c in two.place(tenant).copies] == list(servers)
        assert {c.database for c in two.place(tenant).copies} == \
            {one.place(tenant).database}


def test_adding_a_server_moves_about_r_over_n_plus_one_copies_all_to_it():
    before, after = _map(), _map(hash_servers=('a', 'b', 'c', 'd'))
    moved = kept = 0
    tenants = ['tenant-%d' % n for n in range(2000)]
    for tenant in tenants:
        old = set(before.place(tenant).servers)
        new = set(after.place(tenant).servers)
        gone, came = old - new, new - old
        assert came <= {SERVERS['d']}
        assert len(gone) == len(came) <= 1
        moved += len(came)
        kept += len(old & new)
    # R/(n+1) = 2/4 of the tenants have a copy moved (a copy each): a
    # quarter of the copies, the new server's share.
    assert 0.45 < moved / len(tenants) < 0.55
    assert kept + moved == 2 * len(tenants)


def test_replicas_one_places_as_before():
    placements = _map(replicas=1)
    placement = placements.place('acme')
    assert placement.replicas == ()
    assert placement.copies == (placement,)
    assert not placements.replicated


def test_more_replicas_than_hash_servers_is_refused_naming_the_options():
    with pytest.raises(InvalidOption, match=r'\[dbpt\] replicas = 3 .*'
                       r'hash_servers'):
        _map(replicas=3, hash_servers=('a', 'b'))


def test_an_overrides_line_may_name_several_servers(tmp_path):
    path = tmp_path / 'overrides'
    path.write_text('acme b,c\nsolo a\n')
    placements = _map(replicas=1, overrides_file=str(path))
    assert placements.replicated
    assert placements.place('acme').servers == (SERVERS['b'], SERVERS['c'])
    assert placements.place('solo').servers == (SERVERS['a'],)


@pytest.mark.parametrize('line, why', [
    ('acme b,b', 'named twice'),
    ('acme b,nowhere', "server 'nowhere' is not in"),
])
def test_a_bad_replica_line_is_refused_naming_it(tmp_path, line, why):
    path = tmp_path / 'overrides'
    path.write_text(line + '\n')
    with pytest.raises(InvalidOption, match=why):
        _map(replicas=1, overrides_file=str(path))


def test_a_joint_ticket_is_done_when_every_replica_stored_or_gave_up():
    a, b = Ticket(), Ticket()
    joint = JointTicket((a, b))
    a.done = True
    assert not joint.done
    b.abandoned = True
    assert joint.done


def test_a_joint_ticket_no_replica_stored_is_never_done():
    a, b = Ticket(), Ticket()
    joint = JointTicket((a, b))
    a.abandoned = True
    assert not may_abandon(b)   # b is the last that can still store it
    b.abandoned = True
    assert not joint.done


def test_a_stale_range_meets_reads_over_it_only():
    open_range = stale.StaleRange('u', 'w', 0, 100, stale.OPEN, 'open')
    assert open_range.overlaps(200, None) and open_range.overlaps(None, 100)
    assert not open_range.overlaps(None, 99)
    closed = stale.StaleRange('u', 'w', 0, 100, 200, 'lost')
    assert not closed.overlaps(201, 300) and closed.overlaps(150, 160)


def test_markers_round_trip_and_the_latest_copy_wins():
    first = stale.StaleRange('http://x:1', 'h:1:1', 5, 10, stale.OPEN,
                             'open', 1)
    later = first.with_state(stale.CLEAR, hi=20)
    line = stale.marker_line(later)
    assert line.startswith('stale,server=http://x:1,writer=h:1:1 ')
    result = {'series': [{'tags': {'server': 'http://x:1',
                                   'writer': 'h:1:1'},
                          'columns': ['time', 'lo', 'hi', 'state',
                                      'updated'],
                          'values': [[5, 10, 20, 'clear', later.updated],
                                     ]}]}
    parsed = stale.parse_markers(result)
    assert parsed == [later]
    assert stale.latest([first] + parsed)[first.key] == later


def test_span_reads_the_timestamps_of_lines():
    assert span_ns(['m v=1 5', 'm v=2 3', 'bad']) == (3_000_000, 5_000_000)
    assert span_ns(['nothing']) is None


class Writer:
    """Writes per server; servers in ``down`` fail."""

    retry_timeout = 1.0
    backoff_max = 0.02

    def __init__(self):
        self.written = []
        self.down = set()
        self.pool = concurrent.futures.ThreadPoolExecutor(4)
        self.lock = threading.Lock()

    def submit_call(self, call, *args):
        return self.pool.submit(call, *args)

    def is_down(self, server):
        return server in self.down

    def write(self, placement, lines, retry_for=None, fail_fast=True):
        if placement.server in self.down:
            time.sleep(0.005)
            raise ServerDown('down')
        with self.lock:
            self.written.extend((placement.server, line) for line in lines)


def _buffers(writer, placements, recorder=None, **kw):
    args = dict(chunk_points=100, coalesce_points=1, max_delay=0.0,
                buffered_max=1000, held_max=1000, hold_after=0.1)
    args.update(kw)
    buffers = TenantBuffers(placements, writer, Stats(interval=0),
                            stale=recorder, **args)
    return buffers


class StaleStub:
    def __init__(self):
        self.calls = []

    def missed(self, server, lines, lost=False):
        self.calls.append((server, len(lines), lost))


def _wait(check, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.01)
    return check()


def test_every_point_reaches_every_replica_before_its_record_is_done():
    writer = Writer()
    placements = _map()
    buffers = _buffers(writer, placements)
    tickets = [buffers.add('acme', 'm v=%d %d' % (n, n)) for n in range(5)]
    buffers.flush(everything=True)
    assert all(t.done for t in tickets)
    servers = placements.place('acme').servers
    for server in servers:
        assert sorted(line for s, line in writer.written if s == server) == \
            sorted('m v=%d %d' % (n, n) for n in range(5))


def _second_down(stale_after):
    """Buffers over replicas of which acme's second is down, a recorder,
    that server, and the ticket of one point of acme's."""
    writer = Writer()
    placements = _map()
    recorder = StaleStub()
    down = placements.place('acme').servers[1]
    writer.down.add(down)
    buffers = _buffers(writer, placements, recorder, stale_after=stale_after)
    return writer, buffers, recorder, down, buffers.add('acme', 'm v=1 7')


def test_a_down_replica_holds_its_records_and_records_a_stale_range():
    writer, buffers, recorder, down, ticket = _second_down(3600)
    buffers.flush(everything=True)
    assert _wait(lambda: recorder.calls)
    assert recorder.calls[0][:2] == (down, 1)
    assert not ticket.done           # held for the replica that is up again
    writer.down.clear()
    assert _wait(lambda: ticket.done)


def test_a_replica_held_past_the_bound_is_given_up_and_its_record_done():
    _, buffers, recorder, down, ticket = _second_down(0.2)
    buffers.flush(everything=False)
    assert _wait(lambda: ticket.done)
    assert (down, 1, True) in recorder.calls
    assert buffers.held() == 0


def test_when_every_replica_is_down_nothing_is_given_up_or_committed():
    writer = Writer()
    placements = _map()
    recorder = StaleStub()
    writer.down.update(placements.place('acme').servers)
    buffers = _buffers(writer, placements, recorder, stale_after=0.1)
    ticket = buffers.add('acme', 'm v=1 7')
    buffers.flush(everything=False)
    assert _wait(lambda: len(recorder.calls) >= 2)
    # Both held past the bound, and retried again since (each failed
    # retry is recorded): the timer has seen them give-up-able and kept
    # them.
    past = time.monotonic() + 0.1
    assert _wait(lambda: time.monotonic() > past)
    seen = len(recorder.calls)
    assert _wait(lambda: len(recorder.calls) >= seen + 4)
    assert not ticket.done
    assert not any(lost for _, _, lost in recorder.calls)
    writer.down.clear()
    assert _wait(lambda: ticket.done)
    assert len(writer.written) == 2


class Response:
    status_code = 204
    text = ''

    def raise_for_status(self):
        pass


class MarkerWriter:
    """Records the marker lines posted to each server."""

    def __init__(self):
        self.lines = {}
        self.down = set()

    def is_down(self, server):
        return server in self.down

    def session(self, server):
        writer = self

        class Session:
            def post(self, url, params=None, data=None, timeout=None):
                if params and params.get('db') == stale.DATABASE:
                    writer.lines.setdefault(server, []).append(
                        data.decode())
                return Response()
        return Session()


def _states(lines):
    return [line.split('state="')[1].split('"')[0] for line in lines]


def test_a_missed_range_is_recorded_on_the_other_servers_and_cleared():
    from monasca_persister_dbpt.commits.stale_ranges import StaleRecorder
    a, b, c = SERVERS['a'], SERVERS['b'], SERVERS['c']
    writer = MarkerWriter()
    recorder = StaleRecorder([a, b, c], writer)
    waiting = {a}
    recorder.waiting = lambda server: server in waiting
    writer.down.add(a)
    recorder.missed(a, ['m v=1 2000', 'm v=2 1000'])
    assert a not in writer.lines
    assert _states(writer.lines[b]) == _states(writer.lines[c]) == ['open']
    assert 'lo=1000000000i' in writer.lines[b][0]
    recorder.missed(a, ['m v=3 5000'])      # later points: nothing new
    assert len(writer.lines[b]) == 1
    recorder.tick()                          # still down: stays open
    assert len(writer.lines[b]) == 1
    writer.down.clear()
    recorder.tick()                          # up, but points still wait
    assert len(writer.lines[b]) == 1
    waiting.clear()
    recorder.tick()
    assert _states(writer.lines[b]) == ['open', 'clear']
    assert 'hi=5000000000i' in writer.lines[b][-1]


def test_a_range_with_dropped_points_stays_stale_until_repaired():
    from monasca_persister_dbpt.commits.stale_ranges import StaleRecorder
    a, b = SERVERS['a'], SERVERS['b']
    writer = MarkerWriter()
    recorder = StaleRecorder([a, b], writer)
    recorder.missed(a, ['m v=1 2000'])
    recorder.missed(a, ['m v=1 2000'], lost=True)
    recorder.tick()
    assert _states(writer.lines[b]) == ['open', 'lost', 'lost']


def test_a_marker_a_down_server_missed_is_written_once_it_answers():
    from monasca_persister_dbpt.commits.stale_ranges import StaleRecorder
    a, b, c = SERVERS['a'], SERVERS['b'], SERVERS['c']
    writer = MarkerWriter()
    recorder = StaleRecorder([a, b, c], writer)
    writer.down.update({a, c})
    recorder.missed(a, ['m v=1 2000'])
    assert c not in writer.lines
    writer.down.discard(c)
    recorder.flush()
    assert _states(writer.lines[c]) == ['open']


def test_buffered_points_max_counts_a_point_once_whatever_its_replicas():
    """Each replica's buffer coalesces as much as one copy: at R = 2,
    ``buffered_max`` points are buffered before the biggest are written
    (not half of them), and one point more writes the biggest buffer."""
    writer = Writer()
    buffers = _buffers(writer, _map(), coalesce_points=10 ** 6,
                       max_delay=60.0, buffered_max=10)
    for n in range(10):
        buffers.add('t%d' % (n % 3), 'm v=%d %d' % (n, n))
    assert writer.written == [] and buffers.buffered() == 20
    buffers.add('t0', 'm v=10 10')
    # t0's 5 points, one replica's buffer: 22 - 5 is under the tenth
    # written at a time (18).
    assert _wait(lambda: len(writer.written) >= 5)
    assert sorted(line for _, line in writer.written) == [
        'm v=%d %d' % (n, n) for n in (0, 10, 3, 6, 9)]
