import pytest

from monasca_persister_dbpt.influx import errors
from monasca_persister_dbpt.influx.errors import Action


@pytest.mark.parametrize('status, text, action, reason', [
    (404, '{"error":"database not found: \\"mon_x\\""}', Action.CREATE,
     'database_not_found'),
    (500, '{"error":"retention policy not found: 2w"}', Action.CREATE,
     'retention_policy_not_found'),
    (400, '{"error":"partial write: points beyond retention policy '
          'dropped=3"}', Action.DROPPED, 'beyond_retention'),
    (400, '{"error":"partial write: field type conflict: input field '
          '\\"value\\" ... dropped=1"}', Action.DROPPED,
     'field_type_conflict'),
    (400, '{"error":"partial write: unable to parse \'x\': invalid field '
          'format dropped=0"}', Action.DROPPED, 'unparsable'),
    (400, '{"error":"partial write: max-series-per-database limit exceeded:'
          ' (1000000) dropped=5"}', Action.DROPPED, 'max_series_exceeded'),
    (400, '{"error":"field type conflict"}', Action.SPLIT,
     'field_type_conflict'),
    (400, '{"error":"unable to parse"}', Action.SPLIT, 'unparsable'),
    (413, 'Request Entity Too Large', Action.SPLIT, 'request_too_large'),
    (400, 'something new', Action.SPLIT, 'bad_request'),
    (401, 'authorization failed', Action.RETRY, 'unauthorized'),
    (403, 'forbidden', Action.RETRY, 'forbidden'),
    (500, '{"error":"timeout"}', Action.RETRY, 'transient'),
    (503, 'Service Unavailable', Action.RETRY, 'transient'),
    (None, 'Connection refused', Action.RETRY, 'transient'),
])
def test_each_answer_has_one_action(status, text, action, reason):
    rule = errors.classify(status, text)
    assert (rule.action, rule.reason) == (action, reason)


def test_dropped_count_reads_influx_own_figure():
    assert errors.dropped_count('partial write: x dropped=17', 1) == 17
    assert errors.dropped_count('partial write: x', 4) == 4


def test_table_ends_with_a_catch_all_that_retries():
    last = errors.ERROR_TABLE[-1]
    assert (last.status, last.contains, last.action) == (None, '',
                                                         Action.RETRY)

