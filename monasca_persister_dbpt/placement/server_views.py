"""A reader's view of what every server holds (moves, stale ranges):
asked again every few seconds, a server that cannot be asked keeping its
last answer."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterable

from monasca_persister_dbpt.placement.servers import Server

LOG = logging.getLogger(__name__)


class ServerView:
    #: What is asked, for the log line of a server that cannot be.
    what = 'servers'

    def __init__(self, servers: Iterable[Server],
                 look: Callable[[Server], object], every: float) -> None:
        self.servers = sorted(set(servers), key=lambda s: s.url)
        self._look = look
        self._every = every
        self._next = 0.0
        self._lock = threading.Lock()
        self._answers: dict = {}

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next:
            return
        with self._lock:
            if not force and now < self._next:
                return
            self._next = now + self._every
            for server in self.servers:
                try:
                    self._answers[server] = self._look(server)
                except Exception as exc:  # noqa: BLE001 - kept last answer
                    LOG.warning('%s: cannot ask InfluxDB at %s (%s); using '
                                'what it said last', self.what, server.url,
                                str(exc)[:200])
            self.rebuild(self._answers)

    def rebuild(self, answers: dict) -> None:
        """Called with the lock held: *answers* is server -> last answer."""
        raise NotImplementedError
