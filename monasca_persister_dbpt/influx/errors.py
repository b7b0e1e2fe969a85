"""Which InfluxDB answers drop points and which keep them for a retry.

Telegraf's InfluxDB output keeps the same kind of table. Order matters: the
first matching row wins. Anything not listed is treated as transient, because
a wrongly retried batch costs time while a wrongly dropped one loses data.
"""

from __future__ import annotations

import enum
import re
from typing import NamedTuple, Optional


class Action(enum.Enum):
    #: The database or its policy is missing: create it, then write again.
    CREATE = 'create and retry'
    #: InfluxDB wrote the rest of the request and says how many it dropped.
    DROPPED = 'count the dropped points, keep the rest'
    #: InfluxDB refused the whole request for some of its lines: split it to
    #: keep every valid line and drop only the refused ones.
    SPLIT = 'split the request, drop only refused lines'
    #: Transient: retry with backoff within [dbpt] retry_timeout, then fail
    #: the batch back to the persister so that it does not commit it.
    RETRY = 'retry with backoff, then fail the batch uncommitted'


class Rule(NamedTuple):
    status: Optional[int]   # None: any status, or no answer at all
    contains: str           # substring of the error text ('' matches all)
    action: Action
    reason: str             # counter name and log word


ERROR_TABLE: tuple[Rule, ...] = (
    Rule(404, 'database not found', Action.CREATE, 'database_not_found'),
    Rule(500, 'retention policy not found', Action.CREATE,
         'retention_policy_not_found'),
    Rule(400, 'partial write: points beyond retention policy dropped',
         Action.DROPPED, 'beyond_retention'),
    Rule(400, 'partial write: field type conflict', Action.DROPPED,
         'field_type_conflict'),
    Rule(400, 'partial write: unable to parse', Action.DROPPED, 'unparsable'),
    Rule(400, 'partial write: max-series-per-database limit exceeded',
         Action.DROPPED, 'max_series_exceeded'),
    Rule(400, 'partial write: max-values-per-tag limit exceeded',
         Action.DROPPED, 'max_values_per_tag_exceeded'),
    Rule(400, 'partial write', Action.DROPPED, 'partial_write'),
    Rule(400, 'field type conflict', Action.SPLIT, 'field_type_conflict'),
    Rule(400, 'unable to parse', Action.SPLIT, 'unparsable'),
    Rule(413, '', Action.SPLIT, 'request_too_large'),
    Rule(400, '', Action.SPLIT, 'bad_request'),
    # Authentication and authorisation are configuration faults: retrying
    # then failing uncommitted keeps the data until an operator fixes them.
    Rule(401, '', Action.RETRY, 'unauthorized'),
    Rule(403, '', Action.RETRY, 'forbidden'),
    Rule(None, '', Action.RETRY, 'transient'),
)

_DROPPED = re.compile(r'dropped=(\d+)')


def classify(status: Optional[int], text: str) -> Rule:
    """The row of ERROR_TABLE for an HTTP status (None: no answer) and text."""
    for rule in ERROR_TABLE:
        if rule.status is not None and rule.status != status:
            continue
        if rule.contains in text:
            return rule
    raise AssertionError('ERROR_TABLE has a catch-all row')  # pragma: no cover


def dropped_count(text: str, default: int) -> int:
    """How many points a partial write dropped, per InfluxDB's own count."""
    match = _DROPPED.search(text)
    return int(match.group(1)) if match else default
