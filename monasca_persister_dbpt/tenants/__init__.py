"""Tenants as an operator manages them (``monasca-persister-dbpt-tenants``).

- :mod:`.inventory`: which tenant databases exist on which server, and
  their policies, series, disk and newest point;
- :mod:`.archive`: a tenant's points as a gzip line-protocol file, and back
  through the writer to its placement;
- :mod:`.removal`: dropping a tenant everywhere it lives, and blocking it
  so that late records cannot bring it back;
- :mod:`.cli`: the cliff application and its subcommands.
"""
