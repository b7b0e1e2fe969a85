"""Copying the planned chunks: one quoted ``SELECT ... INTO`` each.

``GROUP BY *`` keeps tags as tags; identical points merge in InfluxDB, so a
chunk copied twice (after a kill, or by a re-run) changes nothing. Chunks run
in parallel on a bounded pool; each is checkpointed when it has finished,
and only if InfluxDB wrote at least as many points as were counted in it.
"""

from __future__ import annotations

import concurrent.futures
import logging
import sys
import threading
import time
from typing import Optional

from monasca_persister_dbpt.influx import errors
from monasca_persister_dbpt.influx.influxql import downsample
from monasca_persister_dbpt.influx.influxql import quote_ident, quote_literal
from monasca_persister_dbpt.influx.schema import DatabaseRefused
from monasca_persister_dbpt.influx.writer import InfluxWriter
from monasca_persister_dbpt.migrate.checkpoint import Checkpoint
from monasca_persister_dbpt.migrate.plan import Chunk, Plan, jobs
from monasca_persister_dbpt.migrate.stream import Streamer
from monasca_persister_dbpt.placement import Placement, PlacementMap

LOG = logging.getLogger(__name__)

_BEYOND_RETENTION = 'points beyond retention policy dropped'
_MISSING = ('database not found', 'retention policy not found')


class ChunkFailed(RuntimeError):
    pass


def copy_statement(source: str, job: list[Chunk],
                   target_rp: Optional[str] = None) -> str:
    """The one statement that copies a job's chunks; every name quoted.

    All chunks of a job share tenant, policy and bounds; ``:MEASUREMENT``
    writes each source measurement into the same name in the target.
    """
    first = job[0]
    into = '%s.%s.:MEASUREMENT' % (quote_ident(first.placement.database),
                                   quote_ident(target_rp) if target_rp
                                   else '')
    sources = ', '.join('%s.%s.%s' % (quote_ident(source),
                                      quote_ident(c.source_rp),
                                      quote_ident(c.measurement))
                        for c in job)
    return ('SELECT * INTO %s FROM %s WHERE %s = %s AND time >= %d '
            'AND time < %d GROUP BY *' % (
                into, sources, quote_ident(first.tenant_tag),
                quote_literal(first.tenant_id), first.start, first.end))


class Progress:
    """tqdm on a terminal, a log line every few seconds otherwise."""

    def __init__(self, total: int, chunks: int, interval: float = 10.0,
                 bar: Optional[bool] = None) -> None:
        self.total, self.chunks = total, chunks
        self.points = self.done = 0
        self._start = time.monotonic()
        self._next = self._start + interval
        self._interval = interval
        self._lock = threading.Lock()
        use_bar = sys.stderr.isatty() if bar is None else bar
        self._bar = None
        if use_bar:
            from tqdm import tqdm
            self._bar = tqdm(total=total, unit='pt', unit_scale=True,
                             desc='migrating', dynamic_ncols=True)

    def advance(self, points: int, chunks: int = 1) -> None:
        with self._lock:
            self.points += points
            self.done += chunks
            if self._bar is not None:
                self._bar.update(points)
            elif time.monotonic() >= self._next or self.done == self.chunks:
                self._next = time.monotonic() + self._interval
                elapsed = time.monotonic() - self._start
                rate = self.points / elapsed if elapsed else 0.0
                if not self.total:  # not known ahead (a rebalance)
                    LOG.info('copied %d points, %d of %d done, %.0f '
                             'points/s', self.points, self.done,
                             self.chunks, rate)
                    return
                left = max(self.total - self.points, 0)
                LOG.info('migrated %d of ~%d points, %d of %d chunks, '
                         '%.0f points/s, ETA %.0fs', self.points, self.total,
                         self.done, self.chunks, rate,
                         left / rate if rate else 0)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class Copier:
    def __init__(self, writer: InfluxWriter, placements: PlacementMap,
                 source_server, checkpoint: Checkpoint,
                 workers: int = 2, chunk_points: int = 1_000_000) -> None:
        self.chunk_points = chunk_points
        self.writer = writer
        self.placements = placements
        self.source_server = source_server
        self.checkpoint = checkpoint
        self.workers = workers
        self.written = 0
        self.dropped = 0
        self.failures: list[tuple[Optional[Chunk], str]] = []
        #: Set by Ctrl-C: take no more chunks.
        self.stopping = threading.Event()
        self.left = 0
        self._streamer: Optional[Streamer] = None
        self._lock = threading.Lock()

    def run(self, plan: Plan, progress: Progress) -> None:
        failed = self._ensure(plan.placements())
        all_jobs = jobs(plan.chunks, self.chunk_points)
        self.left = len(plan.chunks)
        pool = concurrent.futures.ThreadPoolExecutor(self.workers)
        try:
            futures = {}
            for job in all_jobs:
                exc = failed.get(job[0].placement)
                if exc is not None:  # fails at once, the others go on
                    future: concurrent.futures.Future = \
                        concurrent.futures.Future()
                    future.set_exception(exc)
                else:
                    future = pool.submit(self._guarded_copy, plan.source, job)
                futures[future] = job
            for future in concurrent.futures.as_completed(futures):
                job = futures[future]
                if future.cancelled():
                    continue
                try:
                    written = future.result()
                except Exception as exc:  # noqa: BLE001 - reported
                    LOG.error('copying %s of tenant %s [%d, %d) failed: %s',
                              ', '.join(repr(c.measurement) for c in job),
                              job[0].tenant_id, job[0].start, job[0].end, exc)
                    self.failures.extend((c, str(exc)) for c in job)
                    written = 0
                else:
                    for chunk in job:
                        self.checkpoint.mark(chunk.key, chunk.units)
                self.left -= len(job)
                progress.advance(written, len(job))
        except KeyboardInterrupt:
            self.stopping.set()
            raise
        finally:
            # After Ctrl-C: chunks not started are not taken; the ones in
            # flight are abandoned (not checkpointed: copied again later).
            pool.shutdown(wait=not self.stopping.is_set(),
                          cancel_futures=True)
        if not self.stopping.is_set():
            self._backfill_tiers(plan)

    def _guarded_copy(self, source: str, job: list[Chunk]) -> int:
        if self.stopping.is_set():
            raise ChunkFailed('interrupted')
        return self._copy(source, job)

    def _ensure(self, placements) -> dict[Placement, Exception]:
        """Create the target databases; a server that cannot be reached
        costs only its own tenants, a database InfluxDB refuses only its
        tenant (both left for a re-run)."""
        failed = self.writer.ensure_each(placements,
                                         retry_for=self.writer.retry_timeout)
        servers = {}
        for placement, exc in failed.items():
            if isinstance(exc, DatabaseRefused):
                LOG.error('%s; that tenant is left for the next run', exc)
            else:
                servers.setdefault(placement.server.url, exc)
        for url, exc in servers.items():
            LOG.error('InfluxDB at %s: tenant databases could not be created; '
                      'their tenants are left for the next run: %s', url, exc)
        return failed

    def _backfill_tiers(self, plan: Plan) -> None:
        """Fill the tenants' tiers from the raw points just copied: a
        continuous query only ever computes its latest interval."""
        failed = {c.placement.database for c, _ in self.failures if c}
        spans: dict = {}
        for c in plan.chunks:
            p = c.placement
            # From the raw points copied (a tier's own points, copied by a
            # rebalance, are already its statistics), over the units that
            # hold them: a chunk may reach back to the start of time.
            if p.tiers and p.database not in failed and c.target_rp is None:
                first = c.units[0][0] if c.units else c.start
                lo, hi, _ = spans.get(p.database, (first, c.end, p))
                spans[p.database] = (min(lo, first), max(hi, c.end), p)
        for database, (lo, hi, placement) in spans.items():
            hi = min(hi, plan.plan_time + 1)
            for tier in placement.tiers:
                step = tier.seconds * 1_000_000_000
                start = lo - lo % step
                if tier.policy.hours:
                    # Never into a group older than the tier keeps: its
                    # mean would be refused as beyond retention.
                    keep = plan.plan_time - tier.policy.hours * 3600 * \
                        1_000_000_000
                    if start < keep:
                        start = keep - keep % step + step
                if start >= hi:
                    continue
                statement = '%s WHERE time >= %d AND time < %d GROUP BY ' \
                    'time(%s), *' % (downsample(database, tier), start, hi,
                                     tier.interval)
                result = self.writer.run(placement.server, statement)[0]
                error = result.get('error')
                if error and errors.classify(400, error).reason != \
                        'beyond_retention':
                    LOG.error('backfilling tier %s of %s: %s', tier.interval,
                              database, error)
                    self.failures.append((None, error))
                else:
                    LOG.info('backfilled tier %s of %s', tier.interval,
                             database)

    def _copy(self, source: str, job: list[Chunk]) -> int:
        chunk = job[0]
        if chunk.placement.server != self.source_server:
            if self._streamer is None:
                self._streamer = Streamer(self.writer, self.source_server,
                                          source)
            written = sum(self._streamer.copy(c) for c in job)
            counted = sum(c.points for c in job)
            if written < counted:
                raise ChunkFailed('wrote %d of the %d points counted'
                                  % (written, counted))
            with self._lock:
                self.written += written
            return written
        statement = copy_statement(source, job, chunk.target_rp)
        counted = sum(c.points for c in job)
        for attempt in range(3):
            results = self.writer.run(self.source_server, statement)
            result = results[0] if results else {}
            error = result.get('error')
            if error is None or _BEYOND_RETENTION in error:
                written = sum(v[1] for s in result.get('series', [])
                              for v in s.get('values') or [])
                if error is None and written < counted:
                    # Something refused points without an error (field
                    # types across sources, say): never call that done.
                    raise ChunkFailed('InfluxDB wrote %d of the %d points '
                                      'counted' % (written, counted))
                with self._lock:
                    self.written += written
                    if error:
                        self.dropped += errors.dropped_count(error, 1)
                return written
            if any(m in error for m in _MISSING) and attempt < 2:
                self.writer.schema.forget(chunk.placement)
                self.writer.ensure([chunk.placement])
                continue
            raise ChunkFailed(error)
        raise ChunkFailed('target database kept disappearing')
