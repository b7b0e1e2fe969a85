"""Write requests posted by a child process, many to a message.

A writer thread in the worker waits for the interpreter lock after each
system call of its request, and the host's thread, which runs Python all
the time at many tenants, hands it back only every switch interval
(5 ms): a 400-point request that takes 1.9 ms on an idle interpreter
takes 13 ms there (``bench/http_client.py --busy``). A child process of
our own has no such neighbour: the worker hands it the bodies of many
requests in one message and gets the answers of all that have come in
another, so the worker gives the lock up twice for many requests instead
of several times for each (``bench/http_client.py --busy --process``).

The child only posts. It answers each request with its status and text,
or with why there was no answer, and the worker decides everything else
as it does for its own requests: anything but 204 is written again on
the worker's own path (its retries, splits, database creation, held
points, down servers: ``commits/buffers.py``), which is safe because
InfluxDB keeps one point per series and time. A child that exits or
stops answering is started again; what it had is written again the same
way, and it never marks a server down.

Off by default (``[dbpt] write_process``).
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Callable, Optional, Sequence

from monasca_persister_dbpt.influx.connections import NoAnswer, WritePools
from monasca_persister_dbpt.influx.connections import new_session
from monasca_persister_dbpt.placement import Server

LOG = logging.getLogger(__name__)

#: Requests handed over in one message, at most.
BATCH_MAX = 256
#: Seconds a child may take to answer beyond its requests' own timeouts
#: before it is taken for hung, killed and started again.
GRACE = 10.0
#: Starts of the child in a row that may fail before the worker stops
#: asking it (every write then takes the worker's own path).
START_ATTEMPTS = 3

#: done(status, text): status None when there was no answer (text: why).
Done = Callable[[Optional[int], str], None]


class WriteProcess:
    """The worker's side: queue requests, hand them over, call back."""

    def __init__(self, concurrency: int, timeout: float) -> None:
        self._concurrency = max(1, concurrency)
        self._timeout = timeout
        self._lock = threading.Condition()
        self._queue: list = []        # (server, params, lines, done)
        self._pending: dict = {}      # request id -> (done, at, child)
        self._next_id = 0
        self._child: Optional[_Child] = None
        self._failed_starts = 0
        self._closed = False
        #: Children started (the first, and each that replaced one).
        self.started = 0
        #: Requests the child answered (whatever the status).
        self.answered = 0
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name='dbpt-write-process')
        self._thread.start()

    @property
    def usable(self) -> bool:
        """False once the child could not be started again and again."""
        return not self._closed and self._failed_starts < START_ATTEMPTS

    def submit(self, server: Server, params: dict, lines: Sequence[str],
               done: Done) -> None:
        """Post *lines* to *server*'s /write; *done* is called once, from
        another thread, with the answer."""
        with self._lock:
            self._queue.append((server, params, lines, done))
            self._lock.notify()

    @property
    def restarts(self) -> int:
        """Children that replaced one that exited or hung."""
        return max(0, self.started - 1)

    @property
    def child_pid(self) -> Optional[int]:
        child = self._child
        return child.pid if child is not None else None

    def in_flight(self) -> int:
        with self._lock:
            return len(self._queue) + len(self._pending)

    def close(self, within: float = 10.0) -> None:
        """Stop; what is not answered within *within* is answered as not
        posted."""
        deadline = time.monotonic() + within
        with self._lock:
            while (self._queue or self._pending) and \
                    time.monotonic() < deadline and self._child is not None:
                self._lock.wait(0.05)
            self._closed = True
            self._lock.notify_all()
        self._thread.join(within)
        child, self._child = self._child, None
        if child is not None:
            child.stop()
        self._fail_all('the write process was closed')

    # -- the hand-over thread ----------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closed:
                    self._lock.wait(1.0)
                    self._check_hung()
                if self._closed:
                    return
                batch = self._queue[:BATCH_MAX]
                del self._queue[:BATCH_MAX]
            try:
                self._hand_over(batch)
            except Exception:  # noqa: BLE001 - this thread must go on
                LOG.exception('write process: handing requests over')
                for _, _, _, done in batch:
                    _call(done, None, 'not handed to the write process')

    def _hand_over(self, batch: list) -> None:
        bodies = ['\n'.join(lines).encode('utf-8')
                  for _, _, lines, _ in batch]
        child = self._child
        if child is not None and not child.alive():
            self._lost(child, 'exited (status %s)' % child.returncode)
        if self._child is None:
            child = self._start()
            if child is None:
                for _, _, _, done in batch:
                    _call(done, None, 'the write process cannot start')
                return
        message = []
        now = time.monotonic()
        with self._lock:
            if self._child is child:   # else lost meanwhile
                for (server, params, _, done), body in zip(batch, bodies):
                    self._next_id += 1
                    self._pending[self._next_id] = (done, now, child)
                    message.append((self._next_id, server, params, body))
        if not message:
            for _, _, _, done in batch:
                _call(done, None, 'the write process was lost')
            return
        try:
            child.send(message)
        except (OSError, ValueError) as exc:
            self._lost(child, 'could not be written to (%s)' % exc)

    def _start(self) -> Optional['_Child']:
        if self._failed_starts >= START_ATTEMPTS:
            return None
        try:
            child = _Child(self._concurrency, self._timeout, self._answers)
        except OSError as exc:
            self._failed_starts += 1
            LOG.error('write process: cannot start (%s)%s', exc,
                      '; writes take the worker\'s own path from now on'
                      if self._failed_starts >= START_ATTEMPTS else '')
            return None
        self._child = child
        self.started += 1
        return child

    def _check_hung(self) -> None:
        """Under the lock: kill a child that answers nothing in far more
        than its requests' timeouts would take."""
        child = self._child
        if child is None or child.hung or not self._pending:
            return
        oldest = min(at for _, at, _ in self._pending.values())
        rounds = math.ceil(len(self._pending) / self._concurrency) + 1
        if time.monotonic() - oldest > self._timeout * rounds + GRACE:
            child.hung = True
            threading.Thread(target=self._lost, args=(
                child, 'answered nothing for %.0f s' % (
                    time.monotonic() - oldest)), daemon=True).start()

    # -- the child's answers (its reader thread) -----------------------------

    def _answers(self, child: '_Child', answers: Optional[list],
                 why: str = '') -> None:
        if answers is None:
            self._lost(child, why)
            return
        child.answered = True
        with self._lock:
            found = [(self._pending.pop(rid, (None,))[0], status, text)
                     for rid, status, text in answers]
            self._failed_starts = 0
            self.answered += len(answers)
            self._lock.notify_all()
        for done, status, text in found:
            if done is not None:
                _call(done, status, text)

    def _lost(self, child: '_Child', why: str) -> None:
        """The child is gone or hung: what it had is answered as not
        posted (written again on the worker's own path)."""
        with self._lock:
            current = self._child is child
            if current:
                self._child = None
                if not child.answered:
                    self._failed_starts += 1
            given_up = self._failed_starts >= START_ATTEMPTS
        if current:
            LOG.warning('write process %s %s: its requests are written '
                        'again by the worker, %s', child.pid, why,
                        'and no new one is started: %d in a row ended '
                        'without answering, so every write takes the '
                        'worker\'s own path from now on' % START_ATTEMPTS
                        if given_up else 'and a new one is started')
        child.stop()
        self._fail_all('the write process %s' % why, child)

    def _fail_all(self, why: str, child: Optional['_Child'] = None) -> None:
        """Answer as not posted what *child* had (every child's, and
        what is queued, when None)."""
        with self._lock:
            gone = [rid for rid, (_, _, of) in self._pending.items()
                    if child is None or of is child]
            pending = [self._pending.pop(rid)[0] for rid in gone]
            queued = []
            if child is None:
                queued, self._queue = self._queue, []
            self._lock.notify_all()
        for done in pending:
            _call(done, None, why)
        for _, _, _, done in queued:
            _call(done, None, why)


def _call(done: Done, status: Optional[int], text: str) -> None:
    try:
        done(status, text)
    except Exception:  # noqa: BLE001 - one request's fault is its own
        LOG.exception('write process: handling an answer')


class _Child:
    """One child process and the thread reading its answers."""

    def __init__(self, concurrency: int, timeout: float, answers) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        env = dict(os.environ)
        # This package, found where the worker found it.
        here = os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))))
        env['PYTHONPATH'] = os.pathsep.join(
            [here] + [p for p in [env.get('PYTHONPATH')] if p])
        try:
            self._proc = subprocess.Popen(
                [sys.executable, '-m', __name__, str(to_child_r),
                 str(from_child_w), str(concurrency), repr(timeout)],
                pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL,
                env=env)
        except OSError:
            for fd in (to_child_r, to_child_w, from_child_r, from_child_w):
                os.close(fd)
            raise
        os.close(to_child_r)
        os.close(from_child_w)
        self.pid = self._proc.pid
        #: Whether it answered anything (one that never did counts
        #: towards START_ATTEMPTS).
        self.answered = False
        self.hung = False
        self._send = Connection(to_child_w, readable=False)
        self._recv = Connection(from_child_r, writable=False)
        self._send_lock = threading.Lock()
        self._answers = answers
        self._reader = threading.Thread(target=self._read, daemon=True,
                                        name='dbpt-write-answers')
        self._reader.start()

    def alive(self) -> bool:
        return self._proc.poll() is None

    @property
    def returncode(self) -> Optional[int]:
        return self._proc.returncode

    def send(self, message: list) -> None:
        with self._send_lock:
            self._send.send(message)

    def _read(self) -> None:
        while True:
            try:
                answers = self._recv.recv()
            except (EOFError, OSError) as exc:
                code = self._proc.poll()
                self._answers(self, None, 'exited (%s)' % (
                    'status %s' % code if code is not None else
                    type(exc).__name__))
                return
            self._answers(self, answers)

    def stop(self) -> None:
        try:
            self._send.close()   # the child ends at the end of its input
        except OSError:
            pass
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        try:
            self._recv.close()
        except OSError:
            pass


# -- the child ---------------------------------------------------------------

def serve(inbox: Connection, outbox: Connection, concurrency: int,
          timeout: float) -> None:
    """Post every request that comes in, answer them as they end (all that
    ended meanwhile in one message), return at the end of the input."""
    pools = WritePools(concurrency, timeout)
    sessions: dict = {}
    sessions_lock = threading.Lock()
    answers: queue.SimpleQueue = queue.SimpleQueue()

    def session(server: Server):
        with sessions_lock:
            found = sessions.get(server)
            if found is None:
                found = sessions[server] = new_session(server)
            return found

    def post(rid, server, params, body):
        try:
            status, text = pools.post(server, '/write', params, body,
                                      session)
            answers.put((rid, status, text))
        except NoAnswer as exc:
            answers.put((rid, None, str(exc)))
        except Exception as exc:  # noqa: BLE001 - answered, not raised
            answers.put((rid, None, 'write process: %s' % exc))

    def send_answers():
        ended = False
        while not ended:
            batch = [answers.get()]
            while True:
                try:
                    batch.append(answers.get_nowait())
                except queue.Empty:
                    break
            ended = batch[-1] is None
            batch = [answer for answer in batch if answer is not None]
            if batch:
                try:
                    outbox.send(batch)
                except OSError:
                    return   # the worker is gone: nobody to answer

    sender = threading.Thread(target=send_answers, daemon=True)
    sender.start()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        while True:
            try:
                message = inbox.recv()
            except (EOFError, OSError):
                break
            for rid, server, params, body in message:
                pool.submit(post, rid, server, params, body)
    answers.put(None)
    sender.join()
    pools.close()


def main(argv: Optional[Sequence[str]] = None) -> int:
    # A Ctrl-C reaches the whole process group: the worker stops, and
    # this ends with its input.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    args = list(sys.argv[1:] if argv is None else argv)
    inbox = Connection(int(args[0]), writable=False)
    outbox = Connection(int(args[1]), readable=False)
    try:
        serve(inbox, outbox, int(args[2]), float(args[3]))
    except (BrokenPipeError, EOFError):
        pass  # the worker is gone
    return 0


if __name__ == '__main__':
    sys.exit(main())
