"""Driver behaviour that needs no server: refusals and batching."""

import gc
import logging

import pytest

from monasca_persister_dbpt.repositories.alarm_state_history import \
    AlarmStateHistoryRepository
from monasca_persister_dbpt.repositories.metrics import MetricsRepository
from tests import hostile
from tests import records


@pytest.mark.parametrize('topic, payload, reason', hostile.CORPUS,
                         ids=['%s-%d' % (t[0], i) for i, t in
                              enumerate(hostile.CORPUS)])
def test_each_hostile_record_is_refused_once_with_its_reason(
        conf, caplog, topic, payload, reason):
    repo = (MetricsRepository if topic == hostile.M
            else AlarmStateHistoryRepository)(conf)
    with caplog.at_level(logging.WARNING):
        result = repo.process_message(records.Message(payload, offset=41))
    assert result == (None, None)
    refusals = [r for r in caplog.records if 'refused' in r.getMessage()]
    assert len(refusals) == 1
    assert reason in refusals[0].getMessage()
    assert '@41' in refusals[0].getMessage()
    totals = repo.stats.snapshot()['totals']
    assert sum(n for event, n in totals.items()
               if event == 'records_refused' or
               event.startswith('refused_')) == 1


def test_corpus_is_large_enough_for_both_topics():
    assert len(hostile.METRICS) >= 40 and len(hostile.ALARMS) >= 10




@pytest.fixture
def gc_threshold():
    """The interpreter's collector thresholds, put back after the test."""
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_the_driver_makes_the_collector_run_less_often(conf, gc_threshold):
    gc.set_threshold(700, 10, 10)
    conf.set_override('gc_threshold', 12345, 'dbpt')
    MetricsRepository(conf)
    assert gc.get_threshold() == (12345, 10, 10)


def test_gc_threshold_0_leaves_the_collector_as_it_is(conf, gc_threshold):
    gc.set_threshold(700, 10, 10)
    conf.set_override('gc_threshold', 0, 'dbpt')
    MetricsRepository(conf)
    assert gc.get_threshold() == (700, 10, 10)


@pytest.mark.parametrize('value', [
    0.0, -0.0, 1e-05, 9.999e-05, 0.0001, 0.1 + 0.2, 37.123456789012, -2.5,
    123456789012345.6, 999999999999999.9, 1e15, 1e16, -1.5e+16, 5e-324,
    1.7976931348623157e+308, 1e+22])
def test_a_float_value_is_written_as_the_host_writes_it(conf, value):
    """The host writes str(float(v)); the driver writes the same text,
    whether it takes orjson's fast path or repr's exponents."""
    repo = MetricsRepository(conf)
    line, _ = repo.process_message(records.Message(records.encode(
        records.metric('t1', value=value, timestamp=1700000000000))))
    assert ' value=%s,' % str(float(value)) in line
