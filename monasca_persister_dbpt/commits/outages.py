"""What an operator sees of a server that is down: since when, what waits
for it (spilled, held in memory), how old the oldest of it is, and how
close the spill is to its bound; a log line a minute per such server and
gauges per server in the Prometheus exposition."""

from __future__ import annotations

import logging
import time

from monasca_persister_dbpt.stats import LogThrottle, Stats

LOG = logging.getLogger(__name__)

#: Share of spill_max_bytes past which the line is an ERROR.
SPILL_WARN = 0.8


class Outages:
    def __init__(self, placements, writer, buffers, stats: Stats,
                 every: float = 60.0) -> None:
        self._placements = placements
        self._writer = writer
        self._buffers = buffers
        self._throttle = LogThrottle(interval=every, logger=LOG)
        stats.labelled('server_up', 'server', self._up)
        stats.labelled('server_down_seconds', 'server', lambda: {
            url: s['down_seconds'] for url, s in self.status().items()})
        stats.labelled('points_waiting', 'server', lambda: {
            url: s['spilled'] + s['held'] for url, s in
            self.status().items()})
        stats.labelled('oldest_waiting_seconds', 'server', lambda: {
            url: s['oldest_seconds'] for url, s in self.status().items()})
        stats.gauge('spill_used_ratio', self.spill_ratio)
        buffers.on_tick.append(self.report)

    def _up(self) -> dict:
        down = {s.url for s in self._writer.down_since}
        return {s.url: 0 if s.url in down else 1
                for s in set(self._placements.servers.values())}

    def spill_ratio(self) -> float:
        spill = self._buffers.spill
        return round(spill.used_bytes / spill.max_bytes, 4) if spill else 0.0

    def status(self) -> dict[str, dict]:
        """URL -> what waits for that server, for the servers that are
        down or owed points."""
        now = time.time()
        out: dict[str, dict] = {}

        def entry(url):
            return out.setdefault(url, {'down_seconds': 0.0, 'spilled': 0,
                                        'held': 0, 'oldest_seconds': 0.0})
        for server, since in list(self._writer.down_since.items()):
            entry(server.url)['down_seconds'] = round(now - since, 1)
        spill = self._buffers.spill
        if spill is not None:
            for url, waiting in spill.waiting().items():
                e = entry(url)
                e['spilled'] = waiting['points']
                e['oldest_seconds'] = max(e['oldest_seconds'],
                                          waiting['oldest_seconds'])
        for url, (points, since) in self._buffers.held_by_server().items():
            e = entry(url)
            e['held'] = points
            if since:
                e['oldest_seconds'] = max(e['oldest_seconds'],
                                          round(now - since, 1))
        return out

    def report(self) -> None:
        """At most a line a minute per server that is down or owed points."""
        ratio = self.spill_ratio()
        for url, s in sorted(self.status().items()):
            if not (s['down_seconds'] or s['spilled'] or s['held']):
                continue
            level = logging.ERROR if ratio >= SPILL_WARN else \
                logging.WARNING
            self._throttle.log(
                ('outage', url), level,
                'InfluxDB at %s: %s; %d points wait for it (%d spilled, '
                'committed; %d held in memory, uncommitted), the oldest for '
                '%.0fs; the spill is %.0f%% full ([dbpt] spill_max_bytes)%s',
                url, 'down for %.0fs' % s['down_seconds']
                if s['down_seconds'] else 'answering again, replaying',
                s['spilled'] + s['held'], s['spilled'], s['held'],
                s['oldest_seconds'], ratio * 100,
                ': nearly full, past it points are held in memory and then '
                'the persister waits' if ratio >= SPILL_WARN else '')
