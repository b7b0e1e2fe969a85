"""``python -m monasca_persister_dbpt.migrate``: the console script, for a
venv whose bin/ is not on PATH (as upstream's tool was run with python)."""

import sys

from monasca_persister_dbpt.migrate.cli import main

sys.exit(main())
