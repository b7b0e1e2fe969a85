"""``--repair``: copy back what a replica missed, then clear its stale
ranges.

1. *find*: every server's stale ranges
   (:mod:`monasca_persister_dbpt.placement.stale`) and tenant databases;
   for each replicated tenant, each replica with a stale range over its
   data, or without the database another replica holds (a server that came
   back empty), is one job per range;
2. *copy*: from a replica of the same tenant that answers, holds the
   database and has no stale range over that time, with the rebalance's
   planner, streaming copy and checkpoint (only units whose counts differ
   are copied, so a second run copies nothing);
3. *verify*: counts per field, unit, measurement and policy, as the
   migration; what is short is copied again;
4. *clear*: a range whose every job was verified is set ``clear`` on every
   server that holds it.

The source is never written. The run exits 1 while anything is still
stale (a server down, no healthy replica for a range, a copy that failed),
0 when nothing is.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import time
from typing import Optional

import requests

from monasca_persister_dbpt.influx.influxql import quote_ident
from monasca_persister_dbpt.influx.writer import InfluxWriter, WriteFailed
from monasca_persister_dbpt.migrate.copy import Progress
from monasca_persister_dbpt.migrate.plan import MAX_NS, MIN_NS
from monasca_persister_dbpt.migrate.rebalance import MoveJob, Rebalance
from monasca_persister_dbpt.placement import PlacementMap, Server
from monasca_persister_dbpt.placement import stale

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Range:
    lower: int
    upper: int                   # inclusive
    markers: tuple = ()          # the StaleRange keys it comes from


def merge_ranges(markers, now_ns: int) -> list[Range]:
    """Stale ranges of one server as disjoint ranges (an open one ends
    now)."""
    spans = sorted(((m.lo, now_ns if m.hi == stale.OPEN else m.hi, m.key)
                    for m in markers), key=lambda s: s[0])
    out: list[Range] = []
    for lo, hi, key in spans:
        if out and lo <= out[-1].upper + 1:
            last = out[-1]
            out[-1] = Range(last.lower, max(last.upper, hi),
                            last.markers + (key,))
        else:
            out.append(Range(lo, hi, (key,)))
    return out


class Repair:
    def __init__(self, conf, placements: PlacementMap,
                 writer: InfluxWriter, checkpoint: str) -> None:
        self.conf = conf
        self.placements = placements
        self.writer = writer
        self.moves = Rebalance(conf, placements, writer, checkpoint)
        self.moves.checkpoint.identity['repair'] = True

    def _markers(self, server: Server) -> list:
        return stale.markers_in(
            self.writer.run(server, stale.SELECT_MARKERS)[0])

    def find(self, now_ns: int):
        """(jobs, range of each job, stale markers, what cannot be done)."""
        servers = self.moves.servers()
        databases: dict[Server, set] = {}
        found: list = []
        #: (URL of the server it keeps stale, why)
        problems: list[tuple[str, str]] = []
        for server in servers:
            try:
                databases[server] = set(self.moves.databases(server))
                found.extend(self._markers(server))
            except (WriteFailed, RuntimeError) as exc:
                problems.append((server.url, 'cannot ask %s: %s' % (
                    server.url, str(exc)[:200])))
        markers = {k: m for k, m in stale.latest(found).items() if m.stale}
        by_server: dict[str, list] = {}
        for marker in markers.values():
            by_server.setdefault(marker.server, []).append(marker)
        ranges = {url: merge_ranges(found, now_ns)
                  for url, found in by_server.items()}
        tenants = sorted({t for names in databases.values() for t in
                          map(self.placements.tenant_of, names)
                          if t is not None})
        jobs: list[tuple[MoveJob, Range]] = []
        for tenant in tenants:
            placement = self.placements.place(tenant)
            if not placement.replicas:
                continue
            holders = [c.server for c in placement.copies
                       if placement.database in databases.get(c.server, ())]
            for copy in placement.copies:
                target = copy.server
                wanted = list(ranges.get(target.url, ()))
                if holders and target not in holders and target in databases:
                    wanted = [Range(MIN_NS, MAX_NS)]   # rebuild it whole
                for span in wanted:
                    if target not in databases:
                        continue  # said once, as "cannot ask"
                    source = self._source(placement, target, span, holders,
                                          by_server)
                    if source is None:
                        problems.append((target.url, (
                            'tenant %s: no replica other than %s holds %s '
                            'without a stale range over it'
                            % (tenant, target.url, _span(span)))))
                        continue
                    jobs.append((MoveJob(tenant, placement.database, source,
                                         copy, span.lower, span.upper),
                                 span))
        return jobs, markers, problems

    @staticmethod
    def _source(placement, target, span, holders, by_server):
        for copy in placement.copies:
            server = copy.server
            if server == target or server not in holders:
                continue
            if any(m.overlaps(span.lower, span.upper)
                   for m in by_server.get(server.url, ())):
                continue
            return server
        return None

    def clear(self, marker: stale.StaleRange) -> Optional[str]:
        """Set *marker* clear on every server but its own; why not."""
        line = stale.marker_line(marker.with_state(stale.CLEAR))
        for server in self.moves.servers():
            if server.url == marker.server:
                continue
            try:
                self.writer.run(server, 'CREATE DATABASE %s'
                                % quote_ident(stale.DATABASE))
                response = self.writer.session(server).post(
                    server.url + '/write', params={'db': stale.DATABASE,
                                                   'precision': 'ns'},
                    data=line.encode('utf-8'), timeout=30)
            except (WriteFailed, requests.RequestException) as exc:
                return 'clearing it on %s: %s' % (server.url, exc)
            if response.status_code != 204:
                return 'clearing it on %s: HTTP %d %s' % (
                    server.url, response.status_code, response.text[:200])
        return None

    def run(self) -> int:
        c = self.conf
        now_ns = time.time_ns()
        jobs, markers, problems = self.find(now_ns)
        lines = ['repair: %d stale range(s) recorded, %d copy job(s)'
                 % (len(markers), len(jobs))]
        lines += ['  %s, %s' % (job, _span(span)) for job, span in jobs]
        lines += ['  cannot repair now: %s' % why for _, why in problems]
        for line in lines:
            LOG.info(line)
        print('\n'.join(lines))
        if c.dry_run:
            return 1 if markers or jobs or problems else 0
        failed: dict[MoveJob, str] = {}
        if jobs:
            self.moves.checkpoint.acquire()
            if c.restart:
                self.moves.checkpoint.reset()
            self.moves.progress = Progress(0, len(jobs), bar=c.progress_bar)
            try:
                with concurrent.futures.ThreadPoolExecutor(c.workers) as pool:
                    started = [job for job, _ in jobs]
                    for job, why in zip(started, pool.map(
                            self.moves._guarded, started)):
                        self.moves.progress.advance(0, 1)
                        if why is not None:
                            failed[job] = why
            finally:
                self.moves.progress.close()
                self.moves.checkpoint.close()
        # A range is clear once every job over it is verified and nothing
        # about its server was left undone.
        blocked = {key for job, span in jobs if job in failed
                   for key in span.markers}
        left = {url for url, _ in problems}
        cleared = 0
        for key, marker in sorted(markers.items()):
            if key in blocked or marker.server in left:
                continue
            # An open range (a persister still catching up) is cleared for
            # what was copied; that persister records it again if it
            # misses more.
            why = self.clear(marker)
            if why is None:
                cleared += 1
            else:
                problems.append((marker.server, 'stale range of %s: %s' % (
                    marker.server, why)))
        summary = ('repair: %d of %d job(s) verified, %d of %d stale '
                   'range(s) cleared; %d failed, %d cannot be done now' % (
                       len(jobs) - len(failed), len(jobs), cleared,
                       len(markers), len(failed), len(problems)))
        LOG.info(summary)
        print(summary)
        for job, why in sorted(failed.items(), key=lambda kv: str(kv[0])):
            print('failed %s: %s' % (job, why))
            LOG.error('failed %s: %s', job, why)
        for _, why in problems:
            print('not repaired: %s' % why)
        if failed or problems or cleared < len(markers):
            print('still stale: run the same command again once the '
                  'servers named above answer')
            return 1
        return 0


def _span(span: Range) -> str:
    if span.lower <= MIN_NS:
        return 'all of its history%s' % (
            '' if span.upper >= MAX_NS else ' up to %s' % _time(span.upper))
    return 'points from %s to %s' % (_time(span.lower), _time(span.upper))


def _time(ns: int) -> str:
    return time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime(ns / 1e9))
