"""Where a benchmark keeps its servers' data: removed when it exits."""

from __future__ import annotations

import atexit
import shutil
import tempfile


def scratch_dir(prefix: str) -> str:
    """A new temporary folder, removed at exit (after the benchmark's own
    ``finally`` has stopped the servers in it), whether it ends well or
    not: a run leaves nothing behind."""
    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path
