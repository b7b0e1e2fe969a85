"""Per-tenant limits: one tenant cannot flood the others.

- :mod:`.rules`: which limits apply to a tenant (defaults and the tenant
  overrides file) and the reasons a point is refused;
- :mod:`.rate`: ingestion rate, a token bucket per tenant;
- :mod:`.series`: series per tenant database, within a memory budget;
- :mod:`.checks`: the checks a point passes, in order;
- :mod:`.exposition`: the counters in the Prometheus text format.

A refused point is the decision, as Mimir's 429 is: it is counted per
tenant and reason, logged at most once a minute per tenant and reason, and
its Kafka record is committed; it never delays another tenant.
"""

from monasca_persister_dbpt.limits.checks import TenantLimits
from monasca_persister_dbpt.limits.rules import REASONS
from monasca_persister_dbpt.limits.rules import LimitExceeded
from monasca_persister_dbpt.limits.rules import Limits
from monasca_persister_dbpt.limits.rules import LimitsTable

__all__ = ['REASONS', 'LimitExceeded', 'Limits', 'LimitsTable',
           'TenantLimits']
