"""The container the host appends records to between two flushes.

It is only the host's view of one flush: every point goes straight into its
tenant's buffer (:mod:`monasca_persister_dbpt.commits.buffers`), which
outlives the flush, and its Kafka position is tracked with the buffer's
ticket (:mod:`monasca_persister_dbpt.commits.watermark`), so the host's
commit after ``write_batch`` never passes a record not yet written.
"""

from __future__ import annotations

from typing import Iterator, Optional

from monasca_persister_dbpt.commits import guard
from monasca_persister_dbpt.commits.buffers import TenantBuffers
from monasca_persister_dbpt.commits.watermark import Watermark


class TenantBatch:
    def __init__(self, buffers: TenantBuffers,
                 watermark: Optional[Watermark], position: list,
                 everything: Optional[bool] = None) -> None:
        self._buffers = buffers
        self._watermark = watermark
        self._position = position
        # Write everything at the flush when not coalescing.
        self._everything = buffers.max_delay <= 0 if everything is None \
            else everything
        self._count = 0

    def append(self, tenant_id: Optional[str], line: Optional[str]) -> None:
        if line is None:  # a refused record: already logged and counted
            return
        ticket = self._buffers.add(tenant_id, line)
        if self._watermark is not None and self._position[0] is not None:
            self._watermark.track(self._position[0], self._position[1],
                                  ticket)
        self._count += 1

    def counted(self, records: int) -> None:
        """Records a batch taken whole put into the buffers itself."""
        self._count += records

    def get_count(self) -> int:
        return self._count

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        # Empty but owing a commit (buffered points got written while no
        # record came): the host's timed flush then commits them.
        return self._count > 0 or guard.commit_owed()

    def items(self) -> Iterator[tuple[str, list]]:
        return iter(())

    def clear(self) -> None:
        self._count = 0

    def flush(self) -> None:
        self._buffers.flush(self._everything)
