"""Writing line protocol to tenant databases: pooled, parallel, bounded retry.

Writes POST through one keep-alive pool per server
(:mod:`.connections`), queries through each thread's requests session. What to
do with each InfluxDB answer is looked up in :mod:`.errors`; a tenant's
permanent failure is counted and dropped, so it never costs another tenant
its points, while a transient one is retried and finally raised, so the
persister does not commit what was not written.

A write may instead be given a short bound (``retry_for``): when it runs out,
the server is marked down and :class:`ServerDown` is raised at once for every
later bounded write to it, until any request to that server succeeds again.
The persister's batches use this to hold a down server's points aside
(:mod:`monasca_persister_dbpt.commits.buffers`) instead of waiting on it.
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
from monasca_persister_dbpt.influx.connections import NoAnswer, WritePools
from monasca_persister_dbpt.influx.connections import new_session
from monasca_persister_dbpt.influx import influxql
from monasca_persister_dbpt.influx import line_protocol as lp
from monasca_persister_dbpt.influx.schema import DatabaseRefused
from monasca_persister_dbpt.influx.schema import Schema, SchemaError
from monasca_persister_dbpt.placement import Placement, Server
from monasca_persister_dbpt.stats import LogThrottle, Stats

LOG = logging.getLogger(__name__)

_CREATE_ATTEMPTS = 3


class WriteFailed(RuntimeError):
    """Points could not be written within the retry bound: do not commit."""


class ServerDown(WriteFailed):
    """A bounded write gave up on a server that is failing."""




class InfluxWriter:
    """Writes chunks of lines to the database of their placement."""

    def __init__(self, *, concurrency: int = 4, request_timeout: float = 30.0,
                 retry_timeout: float = 120.0, backoff_max: float = 8.0,
                 stats: Optional[Stats] = None) -> None:
        self._timeout = request_timeout
        #: Seconds a transient fault is retried before a write gives up.
        self.retry_timeout = retry_timeout
        #: Longest pause between two retries, for callers that pace their own.
        self.backoff_max = backoff_max
        self.stats = stats if stats is not None else Stats(interval=0)
        self.schema = Schema(self.stats)
        self._local = threading.local()
        #: Servers marked down -> time.time() they were.
        self.down_since: dict[Server, float] = {}
        #: Called with a server whose database a write found gone.
        self.on_recreate: list = []
        self._throttle = LogThrottle(logger=LOG)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix='dbpt-writer')
        #: Connections for writes (requests' sessions are for queries).
        self._pools = WritePools(concurrency, request_timeout)

    # -- connections -------------------------------------------------------

    def session(self, server: Server) -> requests.Session:
        """This thread's keep-alive session to *server*."""
        sessions = getattr(self._local, 'sessions', None)
        if sessions is None:
            sessions = self._local.sessions = {}
        session = sessions.get(server)
        if session is None:
            session = sessions[server] = new_session(server)
        return session

    def query(self, server: Server, statements: str) -> list:
        """Run InfluxQL; per-statement results (errors included, not raised)."""
        try:
            response = self.session(server).post(
                server.url + '/query', data={'q': statements, 'epoch': 'ns'},
                timeout=self._timeout)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise _Transient(None, str(exc)) from exc
        if response.status_code == 400:  # InfluxQL it will never take
            raise SchemaError('%s: %s' % (statements[:200],
                                          response.text.strip()[:300]))
        if response.status_code != 200:
            raise _Transient(response.status_code, response.text)
        body = response.json()
        if 'error' in body:  # the request as a whole was refused
            raise SchemaError('%s: %s' % (statements[:200], body['error']))
        return body.get('results', [])

    def series_keys(self, placement: Placement, limit: int) -> list[str]:
        """Up to *limit* series the tenant database holds, as the keys we
        write (none if it does not exist yet); raises when unreachable."""
        results = self.query(placement.server,
                             influxql.show_series(placement.database, limit))
        result = results[0] if results else {}
        if 'error' in result:
            if 'database not found' in result['error']:
                return []
            raise SchemaError(result['error'])
        keys = []
        for series in result.get('series', ()):
            for (key,) in series.get('values', ()):
                try:
                    keys.append(lp.series_key(*lp.parse_series_key(key)))
                except ValueError:  # not a key we could have written
                    continue
        return keys

    def is_down(self, server: Server) -> bool:
        """True from a bounded write's give-up until the server answers."""
        return server in self.down_since

    def ensure(self, placements: Iterable[Placement],
               retry_for: Optional[float] = None) -> None:
        """Create every database of *placements* not known to exist yet."""
        for exc in self.ensure_each(placements, retry_for).values():
            raise exc

    def ensure_each(self, placements: Iterable[Placement],
                    retry_for: Optional[float] = None,
                    fail_fast: bool = True) -> dict[Placement, Exception]:
        """:meth:`ensure`, each server on its own (in parallel when there
        are several); the placements that failed, and why:
        :class:`DatabaseRefused` for a database InfluxDB refused (that
        tenant alone), :class:`WriteFailed` for all of a server's
        placements when the server did not answer."""
        by_server: dict[Server, list] = {}
        failed: dict[Placement, Exception] = {}
        for p in placements:
            refused = self.schema.refused(p)
            if refused is not None:
                failed[p] = refused
            elif not self.schema.known(p):
                by_server.setdefault(p.server, []).append(p)

        def create(server, group) -> dict:
            try:
                return self.retrying(
                    server, 'creating %d database(s)' % len(group),
                    lambda: self.schema.ensure(
                        group, lambda q: self.query(server, q)),
                    tenant=group[0].tenant_id, retry_for=retry_for,
                    fail_fast=fail_fast)
            except WriteFailed as exc:
                return {p: exc for p in group}
        if len(by_server) > 1:
            results = list(self._pool.map(create, by_server,
                                          by_server.values()))
        else:
            results = [create(*item) for item in by_server.items()]
        for result in results:
            failed.update(result)
        return failed

    def refuse(self, placement: Placement, lines: Sequence[str],
               exc: DatabaseRefused) -> None:
        """Count and drop the points of a tenant whose database InfluxDB
        refused; one log line per tenant a minute at most."""
        self._drop(placement, 'database_refused', len(lines), str(exc))

    # -- writing -----------------------------------------------------------

    def submit_call(self, call, *args) -> concurrent.futures.Future:
        """Run *call* on the writer pool (its connections, its bound)."""
        return self._pool.submit(call, *args)

    def _ready(self, placement: Placement, retry_for: Optional[float],
               fail_fast: bool = True) -> Optional[DatabaseRefused]:
        """Make sure the database exists; its refusal if InfluxDB refused
        it (a server that does not answer raises)."""
        exc = self.schema.refused(placement)
        if exc is None and not self.schema.known(placement):
            exc = self.ensure_each([placement], retry_for,
                                   fail_fast).get(placement)
        if exc is not None and not isinstance(exc, DatabaseRefused):
            raise exc
        return exc

    def write(self, placement: Placement, lines: Sequence[str],
              precision: str = 'ms', retry_for: Optional[float] = None,
              fail_fast: bool = True, policy: Optional[str] = None) -> None:
        """Write *lines*; drop only what InfluxDB refuses for good.

        *fail_fast* False makes a bounded write try a server marked down
        anyway (the replay of held points probes it this way). *policy*
        writes into a policy other than the database's default (a
        rebalance copying a tier).
        """
        refused = self._ready(placement, retry_for, fail_fast)
        if refused is not None:
            self.refuse(placement, lines, refused)
            return
        body = '\n'.join(lines).encode('utf-8')
        creates = 0
        while True:
            status, text = self.retrying(
                placement.server, 'writing %d points to %s' % (
                    len(lines), placement.database),
                lambda: self._post(placement, body, precision, policy),
                tenant=placement.tenant_id, retry_for=retry_for,
                fail_fast=fail_fast)
            if status == 204:
                self.count_written(placement.tenant_id, len(lines))
                return
            rule = errors.classify(status, text)
            if rule.action is errors.Action.CREATE and \
                    creates < _CREATE_ATTEMPTS:
                creates += 1
                LOG.warning('%s for tenant %s: creating it again',
                            text.strip(), placement.tenant_id)
                self.schema.forget(placement)
                for call in self.on_recreate:
                    call(placement.server)  # did the server lose its data?
                refused = self._ready(placement, retry_for, fail_fast)
                if refused is not None:
                    self.refuse(placement, lines, refused)
                    return
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
                self.write(placement, lines[:half], precision, retry_for,
                           fail_fast, policy)
                self.write(placement, lines[half:], precision, retry_for,
                           fail_fast, policy)
                return
            raise WriteFailed('writing %d points for tenant %s to %s: HTTP '
                              '%s %s' % (len(lines), placement.tenant_id,
                                         placement.database, status,
                                         text.strip()))

    def count_written(self, tenant: str, points: int) -> None:
        """Count one request that stored *points* (here or in the write
        process)."""
        self.stats.add(tenant, 'points_written', points)
        self.stats.add(tenant, 'write_requests')

    def _post(self, placement: Placement, body: bytes,
              precision: str = 'ms',
              policy: Optional[str] = None) -> tuple[int, str]:
        """One POST /write; transient faults raise _Transient."""
        params = {'db': placement.database, 'precision': precision}
        if policy:
            params['rp'] = policy
        try:
            status, text = self._pools.post(placement.server, '/write',
                                            params, body, self.session)
        except NoAnswer as exc:
            raise _Transient(None, str(exc)) from exc
        if status == 204:
            return 204, ''
        rule = errors.classify(status, text)
        if rule.action is errors.Action.RETRY:
            raise _Transient(status, text)
        return status, text

    def _drop(self, placement, reason, count, text, line=None) -> None:
        self.stats.add(placement.tenant_id, 'dropped_' + reason, count)
        self._throttle.log(
            (placement.tenant_id, reason), logging.WARNING,
            'dropped %d point(s) of tenant %s in %s (%s): %s%s',
            count, placement.tenant_id, placement.database, reason,
            text.strip()[:300], '; line: %s' % line[:300] if line else '')

    def run(self, server: Server, statement: str) -> list:
        """Run InfluxQL with the bounded retry; per-statement results."""
        return self.retrying(server, statement[:80],
                             lambda: self.query(server, statement))

    def retrying(self, server: Server, what: str, call,
                 tenant: Optional[str] = None,
                 retry_for: Optional[float] = None, fail_fast: bool = True):
        """Run *call*, retrying transient faults with backoff until the bound.

        With *retry_for*, the bound is that instead of ``retry_timeout`` and
        running out marks the server down (see :meth:`is_down`). Only a
        server that does not answer, or answers 5xx (or refuses our
        credentials), is retried: a statement InfluxDB refused is a
        tenant's problem and is raised at once.
        """
        bound = self.retry_timeout if retry_for is None else retry_for
        deadline = time.monotonic() + bound
        delay = 0.25
        attempt = 0
        while True:
            if retry_for is not None and fail_fast and \
                    server in self.down_since:
                raise ServerDown('InfluxDB at %s is down (%s%s)' % (
                    server.url, what, ', tenant %s' % tenant if tenant
                    else ''))
            attempt += 1
            try:
                result = call()
            except (_Transient, requests.RequestException) as exc:
                auth = self._auth_error(server, exc)
                left = deadline - time.monotonic()
                if left <= 0 and retry_for is not None:
                    if server not in self.down_since:
                        self.down_since[server] = time.time()
                        if not auth:  # credentials: their ERROR says it
                            LOG.warning('InfluxDB at %s marked down after '
                                        '%d attempts over %.1fs: %s',
                                        server.url, attempt, bound,
                                        str(exc).strip()[:300])
                    raise ServerDown('InfluxDB at %s is down (%s%s): %s' % (
                        server.url, what, ', tenant %s' % tenant if tenant
                        else '', str(exc)[:300])) from exc
                if left <= 0:
                    self.stats.add(tenant, 'write_failures')
                    raise WriteFailed(
                        'InfluxDB at %s still failing after %d attempts over '
                        '%.0fs (%s%s): %s'
                        % (server.url, attempt, bound, what,
                           ', tenant %s' % tenant if tenant else '',
                           str(exc)[:300])) from exc
                self.stats.add(tenant, 'retries')
                pause = min(delay, left) * (0.5 + random.random() / 2)
                if not auth:
                    LOG.warning('InfluxDB at %s failed (%s), retry %d in '
                                '%.2fs', server.url, str(exc).strip()[:200],
                                attempt, pause)
                time.sleep(pause)
                delay = min(delay * 2, self.backoff_max)
            else:
                if self.down_since and server in self.down_since:
                    self.down_since.pop(server, None)
                    LOG.warning('InfluxDB at %s answers again', server.url)
                return result

    def _auth_error(self, server: Server, exc: Exception) -> bool:
        """An ERROR an operator cannot miss when InfluxDB refuses our
        credentials (nothing is lost: the points wait, as for a down
        server), instead of server-down lines; True if it was that."""
        status = getattr(exc, 'status', None)
        if status in (401, 403):
            self._throttle.log(
                (server.url, 'auth'), logging.ERROR,
                'InfluxDB at %s refuses our credentials (HTTP %d: %s): check '
                '[influxdb] user and password; the points are kept and '
                'retried, nothing is committed past them', server.url, status,
                str(exc)[:200])
            return True
        return False

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._pools.close()


class _Transient(Exception):
    def __init__(self, status: Optional[int], text: str) -> None:
        super().__init__('HTTP %s: %s' % (status, text.strip()[:300])
                         if status else text[:300])
        self.status = status
