"""Writing line protocol to tenant databases: pooled, parallel, bounded retry.

Each writer thread keeps its own keep-alive connection per server. What to
do with each InfluxDB answer is looked up in :mod:`.errors`; a tenant's
permanent failure is counted and dropped, so it never costs another tenant
its points, while a transient one is retried and finally raised, so the
persister does not commit what was not written.
"""

from __future__ import annotations

import concurrent.futures
import logging
import random
import threading
import time
from typing import Iterable, Optional, Sequence

import requests

from monasca_persister_dbpt.influx import errors
from monasca_persister_dbpt.influx.schema import Schema, SchemaError
from monasca_persister_dbpt.placement import Placement, Server
from monasca_persister_dbpt.stats import Stats

LOG = logging.getLogger(__name__)

_CREATE_ATTEMPTS = 3
_OCTETS = {'Content-Type': 'application/octet-stream'}


class WriteFailed(RuntimeError):
    """Points could not be written within the retry bound: do not commit."""


class InfluxWriter:
    """Writes chunks of lines to the database of their placement."""

    def __init__(self, *, concurrency: int = 4, request_timeout: float = 30.0,
                 retry_timeout: float = 120.0, backoff_max: float = 8.0,
                 stats: Optional[Stats] = None) -> None:
        self._timeout = request_timeout
        self._retry_timeout = retry_timeout
        self._backoff_max = backoff_max
        self.stats = stats if stats is not None else Stats(interval=0)
        self.schema = Schema(self.stats)
        self._local = threading.local()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix='dbpt-writer')

    # -- connections -------------------------------------------------------

    def session(self, server: Server) -> requests.Session:
        """This thread's keep-alive session to *server*."""
        sessions = getattr(self._local, 'sessions', None)
        if sessions is None:
            sessions = self._local.sessions = {}
        session = sessions.get(server)
        if session is None:
            session = sessions[server] = requests.Session()
            session.verify = server.verify_ssl
            if server.password:
                session.auth = (server.user, server.password)
        return session

    def query(self, server: Server, statements: str) -> list:
        """Run InfluxQL; per-statement results (errors included, not raised)."""
        try:
            response = self.session(server).post(
                server.url + '/query', data={'q': statements, 'epoch': 'ns'},
                timeout=self._timeout)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise _Transient(None, str(exc)) from exc
        if response.status_code != 200:
            raise _Transient(response.status_code, response.text)
        body = response.json()
        if 'error' in body:  # the request as a whole was refused
            raise SchemaError('%s: %s' % (statements[:200], body['error']))
        return body.get('results', [])

    def ensure(self, placements: Iterable[Placement]) -> None:
        """Create every database of *placements* not known to exist yet."""
        by_server: dict[Server, list] = {}
        for p in placements:
            if not self.schema.known(p):
                by_server.setdefault(p.server, []).append(p)
        for server, group in by_server.items():
            def create(server=server, group=group):
                self.schema.ensure(group, lambda q: self.query(server, q))
            self.retrying(server, 'creating %d database(s)' % len(group),
                          create, tenant=group[0].tenant_id)

    # -- writing -----------------------------------------------------------

    def submit(self, placement: Placement,
               lines: Sequence[str]) -> concurrent.futures.Future:
        return self._pool.submit(self.write, placement, lines)

    def write_all(self, chunks: Iterable[tuple[Placement, Sequence[str]]],
                  pending: Sequence[concurrent.futures.Future] = ()) -> None:
        """Write every chunk in parallel; raise only when all are settled."""
        chunks = list(chunks)
        self.ensure(p for p, _ in chunks)
        futures = list(pending) + [self.submit(p, lines) for p, lines in chunks]
        failures = []
        for future in futures:
            try:
                future.result()
            except Exception as exc:  # noqa: BLE001 - reported below
                failures.append(exc)
        if failures:
            raise WriteFailed('%d of %d writes failed; first: %s'
                              % (len(failures), len(futures), failures[0]))

    def write(self, placement: Placement, lines: Sequence[str],
              precision: str = 'ms') -> None:
        """Write *lines*; drop only what InfluxDB refuses for good."""
        if not self.schema.known(placement):
            self.ensure([placement])
        body = '\n'.join(lines).encode('utf-8')
        creates = 0
        while True:
            status, text = self.retrying(
                placement.server, 'writing %d points to %s' % (
                    len(lines), placement.database),
                lambda: self._post(placement, body, precision),
                tenant=placement.tenant_id)
            if status == 204:
                self.stats.add(placement.tenant_id, 'points_written',
                               len(lines))
                return
            rule = errors.classify(status, text)
            if rule.action is errors.Action.CREATE and \
                    creates < _CREATE_ATTEMPTS:
                creates += 1
                LOG.warning('%s for tenant %s: creating it again',
                            text.strip(), placement.tenant_id)
                self.schema.forget(placement)
                self.ensure([placement])
                continue
            if rule.action is errors.Action.DROPPED:
                dropped = errors.dropped_count(text, 1) or 1
                self.stats.add(placement.tenant_id, 'points_written',
                               max(len(lines) - dropped, 0))
                self._drop(placement, rule.reason, dropped, text)
                return
            if rule.action is errors.Action.SPLIT:
                if len(lines) == 1:
                    self._drop(placement, rule.reason, 1, text, lines[0])
                    return
                half = len(lines) // 2
                self.write(placement, lines[:half], precision)
                self.write(placement, lines[half:], precision)
                return
            raise WriteFailed('writing %d points for tenant %s to %s: HTTP '
                              '%s %s' % (len(lines), placement.tenant_id,
                                         placement.database, status,
                                         text.strip()))

    def _post(self, placement: Placement, body: bytes,
              precision: str = 'ms') -> tuple[int, str]:
        """One POST /write; transient faults raise _Transient."""
        try:
            response = self.session(placement.server).post(
                placement.server.url + '/write',
                params={'db': placement.database, 'precision': precision},
                data=body, timeout=self._timeout, headers=_OCTETS)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise _Transient(None, str(exc)) from exc
        if response.status_code == 204:
            return 204, ''
        text = response.text
        rule = errors.classify(response.status_code, text)
        if rule.action is errors.Action.RETRY:
            raise _Transient(response.status_code, text)
        return response.status_code, text

    def _drop(self, placement, reason, count, text, line=None) -> None:
        self.stats.add(placement.tenant_id, 'dropped_' + reason, count)
        LOG.warning('dropped %d point(s) of tenant %s in %s (%s): %s%s',
                    count, placement.tenant_id, placement.database, reason,
                    text.strip()[:300],
                    '; line: %s' % line[:300] if line else '')

    def run(self, server: Server, statement: str) -> list:
        """Run InfluxQL with the bounded retry; per-statement results."""
        return self.retrying(server, statement[:80],
                             lambda: self.query(server, statement))

    def retrying(self, server: Server, what: str, call,
                 tenant: Optional[str] = None):
        """Run *call*, retrying transient faults with backoff until the bound."""
        deadline = time.monotonic() + self._retry_timeout
        delay = 0.25
        attempt = 0
        while True:
            attempt += 1
            try:
                return call()
            except (_Transient, SchemaError, requests.RequestException,
                    ValueError) as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.stats.add(tenant, 'write_failures')
                    raise WriteFailed(
                        'InfluxDB at %s still failing after %d attempts over '
                        '%.0fs (%s%s): %s'
                        % (server.url, attempt, self._retry_timeout, what,
                           ', tenant %s' % tenant if tenant else '',
                           str(exc)[:300])) from exc
                self.stats.add(tenant, 'retries')
                pause = min(delay, left) * (0.5 + random.random() / 2)
                LOG.warning('InfluxDB at %s failed (%s), retry %d in %.2fs',
                            server.url, str(exc).strip()[:200], attempt,
                            pause)
                time.sleep(pause)
                delay = min(delay * 2, self._backoff_max)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class _Transient(Exception):
    def __init__(self, status: Optional[int], text: str) -> None:
        super().__init__('HTTP %s: %s' % (status, text.strip()[:300])
                         if status else text[:300])
        self.status = status
