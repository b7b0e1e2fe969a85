"""A graceful stop: on SIGTERM a worker writes what it holds, commits, and
exits, instead of leaving its coalesced points to be read again.

monasca-persister's parent answers SIGTERM by terminating every worker
and killing what is left two seconds later (systemd's stop sends SIGTERM
to every process at once). confluent-kafka checks for signals while it
polls, so the handler runs in the worker's main thread within a fraction
of a second even on a quiet topic. It writes every buffered point on a
thread of its own (a down server's go to the spill) and waits for that
within the bound, then commits the watermark from the main thread (a
commit from another thread would wait for the poll in progress) and ends
the process, all within :data:`STOP_WITHIN` seconds. A second SIGTERM
ends it at once. Nothing depends on the stop finishing: what it did not
write is not committed, and Kafka gives it again.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

from monasca_persister_dbpt.commits import guard

LOG = logging.getLogger(__name__)

#: Seconds the stop may take (the host kills its workers after 2).
STOP_WITHIN = 1.5
#: Share of it the writes may take; the commit has the rest.
WRITE_SHARE = 0.6

_installed_in = None


def install(buffers, within: float = STOP_WITHIN) -> bool:
    """Handle SIGTERM in this worker process (once; only from the main
    thread, where signal handlers are set)."""
    global _installed_in
    if _installed_in == os.getpid():
        return True
    if threading.current_thread() is not threading.main_thread():
        return False
    state = {'stopping': False}

    def on_sigterm(signum, frame):
        if state['stopping']:
            os._exit(143)  # a second SIGTERM: at once
        state['stopping'] = True
        stop(buffers, within)
    signal.signal(signal.SIGTERM, on_sigterm)
    _installed_in = os.getpid()
    return True


def stop(buffers, within: float) -> None:
    started = time.monotonic()
    LOG.info('SIGTERM: writing %d buffered points and committing before '
             'exit', buffers.buffered())
    left = [buffers.buffered()]

    def write():
        left[0] = buffers.drain(within * WRITE_SHARE)
    # On a thread: the main thread may have been stopped holding the
    # buffers' lock, so it must not wait for the writes unbounded.
    writer = threading.Thread(target=write, daemon=True, name='dbpt-stop')
    writer.start()
    writer.join(within * WRITE_SHARE + 0.1)
    try:
        committed = guard.commit_now()
    except Exception:  # noqa: BLE001 - exit whatever happened
        LOG.exception('commit at stop')
        committed = False
    LOG.info('stopped in %.2fs: %s, %s', time.monotonic() - started,
             'every point written' if not left[0] else
             '%d points left unwritten (uncommitted: read again)' % left[0],
             'committed' if committed else 'nothing committed')
    logging.shutdown()
    os._exit(0)
