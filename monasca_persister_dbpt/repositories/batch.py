"""The container the host appends records to between two flushes.

Points are grouped per tenant as they arrive. A tenant whose group reaches
``[dbpt] pipeline_points`` (at most ``[influxdb] batch_size``) is handed to
the writer at once, so InfluxDB works on it while the host parses the rest
of the batch; ``flush`` writes what is left and waits for everything, so
nothing is committed before it is written. With a backlog, what a down
server could not take is held there (and commits wait for it) instead of
failing the whole batch.
"""

from __future__ import annotations

from typing import Iterator, Optional

from monasca_persister_dbpt import commit_guard
from monasca_persister_dbpt.backlog import Backlog
from monasca_persister_dbpt.influx.writer import InfluxWriter, WriteFailed
from monasca_persister_dbpt.placement import PlacementMap


class TenantBatch:
    def __init__(self, placements: PlacementMap, writer: InfluxWriter,
                 chunk_size: int, ship_at: int = 0,
                 backlog: Optional[Backlog] = None,
                 hold_after: Optional[float] = None) -> None:
        self._placements = placements
        self._writer = writer
        self._chunk = max(1, chunk_size)
        self._ship_at = min(ship_at, self._chunk) if ship_at > 0 \
            else self._chunk
        self._backlog = backlog
        # A bounded retry only makes sense when there is somewhere to hold.
        self._retry_for = hold_after if backlog is not None else None
        self._groups: dict[str, list] = {}
        self._pending: list = []
        self._count = 0

    def append(self, tenant_id: Optional[str], line: Optional[str]) -> None:
        if line is None:  # a refused record: already logged and counted
            return
        group = self._groups.get(tenant_id)
        if group is None:
            group = self._groups[tenant_id] = []
        group.append(line)
        self._count += 1
        if len(group) >= self._ship_at:
            self._groups[tenant_id] = []
            placement = self._placements.place(tenant_id)
            self._pending.append((placement, group, self._writer.submit(
                placement, group, self._retry_for)))

    def get_count(self) -> int:
        return self._count

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        # Empty but owing a commit (held points got written while no record
        # came): the host's timed flush then commits what it has read.
        return self._count > 0 or (self._backlog is not None
                                   and commit_guard.commit_owed())

    def items(self) -> Iterator[tuple[str, list]]:
        return iter(self._groups.items())

    def clear(self) -> None:
        self._groups = {}
        self._pending = []
        self._count = 0

    def flush(self) -> None:
        chunks = [(self._placements.place(tenant), group[i:i + self._chunk])
                  for tenant, group in self._groups.items()
                  for i in range(0, len(group), self._chunk)]
        pending, self._pending = self._pending, []
        failures = self._writer.write_all(chunks, pending, self._retry_for)
        if failures and self._backlog is not None:
            self._backlog.hold(failures)
        elif failures:
            raise WriteFailed('%d of %d writes failed; first: %s'
                              % (len(failures), len(chunks) + len(pending),
                                 failures[0][2]))
        self._groups = {}
