"""State kept per tenant stays bounded, whatever the number of tenants."""

import dataclasses
import logging
import tracemalloc

from monasca_persister_dbpt.influx.schema import Schema
from monasca_persister_dbpt.placement import PlacementMap
from monasca_persister_dbpt.stats import LogThrottle, Stats

TENANTS = 100_000
#: What 100k tenant ids may cost in all of the bookkeeping together.
BOUND_MIB = 40


def test_100k_tenant_ids_keep_mapping_stats_and_schema_bounded(tmp_path):
    placements = PlacementMap()
    stats = Stats(interval=0, path=str(tmp_path / 'stats.json'))
    schema = Schema(stats)
    throttle = LogThrottle()
    logging.disable(logging.CRITICAL)  # the captured records would count
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for i in range(TENANTS):
        tenant = 'tenant%06d' % i
        p = placements.place(tenant)
        stats.add(tenant, 'points_written', 3)
        stats.add(tenant, 'dropped_beyond_retention')
        schema._remember(p)
        schema._refuse(dataclasses.replace(p, database=p.database + 'x'),
                       'invalid name') if i % 10 == 0 else None
        throttle.log((tenant, 'x'), 0, 'quiet')
    used = (tracemalloc.get_traced_memory()[0] - base) / 2 ** 20
    tracemalloc.stop()
    logging.disable(logging.NOTSET)
    assert used < BOUND_MIB, '%.1f MiB for %d tenants' % (used, TENANTS)
    # Totals still count everyone; per-tenant detail is for the recent ones.
    assert stats.total('points_written') == 3 * TENANTS
    snap = stats.snapshot()
    assert snap['gauges']['tenants_tracked'] <= 10000
    assert len(snap['tenants']) <= 100
    stats.report()
    assert (tmp_path / ('stats.json.%d' % snap['pid'])).stat().st_size \
        < 64 * 1024
    assert len(schema) <= 2 * 50000
