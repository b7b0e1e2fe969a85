"""Finished work, recorded so that a later run skips what is still true.

The first line names the source the checkpoint belongs to (server, source
database, target template, time unit); a checkpoint of another source is
refused, so that one migration can never skip what another copied. Then one
JSON line per finished chunk with the point count of each time unit it
copied, written with a single ``write`` and ``fsync`` before the chunk
counts as done: after ``kill -9`` every line but possibly a torn last one is
intact, and a torn line is ignored (that chunk is simply copied again, which
InfluxDB merges). A unit is skipped by a later run only while the source
still holds exactly the recorded count (see :mod:`.plan`).

A lock file beside it (``<checkpoint>.lock``, holding the pid) keeps two
runs off one checkpoint; the lock is released by the kernel when the holder
dies, however it dies.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from typing import Optional

LOG = logging.getLogger(__name__)

FORMAT = 2


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message says why and what to
    do."""


class Checkpoint:
    def __init__(self, path: Optional[str],
                 identity: Optional[dict] = None) -> None:
        self.path = path
        self.identity = dict(identity or {}, format=FORMAT)
        self._lock = threading.Lock()
        self._handle = None
        self._lock_handle = None

    def acquire(self) -> None:
        """Take the lock, or say who holds it."""
        if not self.path or self._lock_handle is not None:
            return
        lock_path = self.path + '.lock'
        try:
            handle = open(lock_path, 'a+', encoding='utf-8')
        except OSError as exc:
            raise CheckpointError('cannot open the lock file %s: %s'
                                  % (lock_path, exc.strerror)) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or 'unknown'
            handle.close()
            raise CheckpointError(
                'checkpoint %s is in use by another migration (pid %s); '
                'wait for it, or give this run its own --checkpoint'
                % (self.path, holder)) from None
        handle.seek(0)
        handle.truncate()
        handle.write('%d\n' % os.getpid())
        handle.flush()
        self._lock_handle = handle

    def load(self) -> dict[str, dict[int, int]]:
        """``{chunk key: {unit start: count}}`` of the finished chunks."""
        done: dict[str, dict] = {}
        if not self.path or not os.path.lexists(self.path):
            return done
        try:
            with open(self.path, encoding='utf-8') as handle:
                lines = handle.readlines()
        except IsADirectoryError:
            raise CheckpointError('checkpoint %s is a directory; name a file '
                                  'with --checkpoint' % self.path) from None
        except UnicodeDecodeError:
            raise CheckpointError(
                'checkpoint %s is not a checkpoint (not UTF-8 text); name '
                'another file with --checkpoint, or --restart to replace it'
                % self.path) from None
        except OSError as exc:
            raise CheckpointError('cannot read checkpoint %s: %s'
                                  % (self.path, exc.strerror)) from None
        if not lines:
            return done
        try:
            header = json.loads(lines[0])
            identity = header['checkpoint']
        except (ValueError, KeyError, TypeError):
            raise CheckpointError(
                'checkpoint %s has no header line naming its source (not a '
                'checkpoint, or one of an older version); --restart starts '
                'over, or name another file with --checkpoint' % self.path) \
                from None
        if identity != self.identity:
            differs = sorted(k for k in set(identity) | set(self.identity)
                             if identity.get(k) != self.identity.get(k))
            raise CheckpointError(
                'checkpoint %s belongs to another migration (%s: %s, this '
                'run: %s); give this run its own --checkpoint, or --restart '
                'to start this one over' % (
                    self.path, ', '.join(differs),
                    ', '.join('%s=%s' % (k, identity.get(k)) for k in differs),
                    ', '.join('%s=%s' % (k, self.identity.get(k))
                              for k in differs)))
        for number, line in enumerate(lines[1:], 2):
            try:
                entry = json.loads(line)
                units = done.setdefault(entry['key'], {})
                for start, count in entry['units']:
                    units[int(start)] = int(count)
            except (ValueError, KeyError, TypeError):
                LOG.warning('checkpoint %s line %d is torn or invalid: '
                            'ignored (that chunk is copied again)',
                            self.path, number)
        return done

    def mark(self, key: str, units) -> None:
        """Record a finished chunk's ``(unit start, count)`` pairs."""
        if not self.path:
            return
        line = json.dumps({'key': key, 'units': [list(u) for u in units]}) \
            + '\n'
        with self._lock:
            if self._handle is None:
                new = not os.path.exists(self.path) or \
                    os.path.getsize(self.path) == 0
                self._handle = open(self.path, 'a', encoding='utf-8')
                if new:
                    line = json.dumps({'checkpoint': self.identity}) + '\n' \
                        + line
            self._handle.write(line)
            self._handle.flush()
            os.fsync(self._handle.fileno())

    def reset(self) -> None:
        """Start over: forget every finished chunk."""
        if self.path and os.path.lexists(self.path):
            if os.path.isdir(self.path):
                raise CheckpointError('checkpoint %s is a directory; name a '
                                      'file with --checkpoint' % self.path)
            os.remove(self.path)

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None
            if self._lock_handle is not None:
                self._lock_handle.close()
                self._lock_handle = None
