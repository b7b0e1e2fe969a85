"""Finished work, recorded so that a killed run resumes where it stopped.

One JSON line per finished chunk, written with a single ``write`` and
``fsync`` before the chunk counts as done: after ``kill -9`` every line but
possibly a torn last one is intact, and a torn line is ignored (that chunk
is simply copied again, which InfluxDB merges).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Optional

LOG = logging.getLogger(__name__)


class Checkpoint:
    def __init__(self, path: Optional[str]) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._handle = None

    def load(self) -> dict[str, list[tuple[int, int]]]:
        """Finished intervals per chunk key."""
        done: dict[str, list] = {}
        if not self.path or not os.path.exists(self.path):
            return done
        with open(self.path, encoding='utf-8') as handle:
            for number, line in enumerate(handle, 1):
                try:
                    entry = json.loads(line)
                    done.setdefault(entry['key'], []).append(
                        (int(entry['start']), int(entry['end'])))
                except (ValueError, KeyError, TypeError):
                    LOG.warning('checkpoint %s line %d is torn or invalid: '
                                'ignored (that chunk is copied again)',
                                self.path, number)
        return done

    def mark(self, key: str, start: int, end: int) -> None:
        if not self.path:
            return
        line = json.dumps({'key': key, 'start': start, 'end': end}) + '\n'
        with self._lock:
            if self._handle is None:
                self._handle = open(self.path, 'a', encoding='utf-8')
            self._handle.write(line)
            self._handle.flush()
            os.fsync(self._handle.fileno())

    def reset(self) -> None:
        """Start over: forget every finished chunk."""
        if self.path and os.path.exists(self.path):
            os.remove(self.path)

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None
