"""The container the host appends records to between two flushes.

Points are grouped per tenant as they arrive. A tenant whose group reaches
``[dbpt] pipeline_points`` (at most ``[influxdb] batch_size``) is handed to
the writer at once, so InfluxDB works on it while the host parses the rest
of the batch; ``flush`` writes what is
left and waits for everything, so nothing is committed before it is written.
"""

from __future__ import annotations

import concurrent.futures
from typing import Iterator, Optional

from monasca_persister_dbpt.influx.writer import InfluxWriter
from monasca_persister_dbpt.placement import PlacementMap


class TenantBatch:
    def __init__(self, placements: PlacementMap, writer: InfluxWriter,
                 chunk_size: int, ship_at: int = 0) -> None:
        self._placements = placements
        self._writer = writer
        self._chunk = max(1, chunk_size)
        self._ship_at = min(ship_at, self._chunk) if ship_at > 0 \
            else self._chunk
        self._groups: dict[str, list] = {}
        self._pending: list[concurrent.futures.Future] = []
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
            self._pending.append(self._writer.submit(
                self._placements.place(tenant_id), group))

    def get_count(self) -> int:
        return self._count

    def __len__(self) -> int:
        return self._count

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
        self._writer.write_all(chunks, pending)
        self._groups = {}
