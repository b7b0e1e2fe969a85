"""Driver behaviour that needs no server: refusals and batching."""

import logging

import pytest

from monasca_persister_dbpt.repositories.alarm_state_history import \
    AlarmStateHistoryRepository
from monasca_persister_dbpt.repositories.batch import TenantBatch
from monasca_persister_dbpt.repositories.metrics import MetricsRepository
from tests import hostile
from tests import records


class FakeWriter:
    """Records what would be written; no server in unit tests."""

    def __init__(self):
        self.submitted = []
        self.flushed = []

    def submit(self, placement, lines, retry_for=None):
        self.submitted.append((placement.database, list(lines)))
        return _Done()

    def write_all(self, chunks, pending=(), retry_for=None):
        for _, _, future in pending:
            future.result()
        self.flushed.extend((p.database, list(lines)) for p, lines in chunks)
        return []


class _Done:
    def result(self):
        return None


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
    assert repo.stats.total('records_refused') == 1


def test_corpus_is_large_enough_for_both_topics():
    assert len(hostile.METRICS) >= 40 and len(hostile.ALARMS) >= 10


def test_refused_records_never_enter_the_batch_and_valid_ones_stay(conf):
    repo = MetricsRepository(conf)
    batch = repo.data_points_class()
    good = [records.metric('t%d' % (i % 3), timestamp=1700000000000 + i)
            for i in range(9)]
    for i, payload in enumerate(p for _, p, _ in hostile.CORPUS):
        batch.append(*reversed(repo.process_message(
            records.Message(payload))))
        if i < len(good):
            line, tenant = repo.process_message(
                records.Message(records.encode(good[i])))
            batch.append(tenant, line)
    assert batch.get_count() == len(good)
    assert sorted(t for t, _ in batch.items()) == ['t0', 't1', 't2']


def test_batch_ships_a_tenant_when_it_reaches_the_chunk_size(conf):
    from monasca_persister_dbpt.placement import PlacementMap
    writer = FakeWriter()
    batch = TenantBatch(PlacementMap(), writer, chunk_size=3)
    for i in range(7):
        batch.append('a', 'line a%d' % i)
    batch.append('b', 'line b0')
    assert [db for db, _ in writer.submitted] == ['mon_a', 'mon_a']
    assert batch.get_count() == 8 and len(batch) == 8
    batch.flush()
    assert sorted(writer.flushed) == [('mon_a', ['line a6']),
                                      ('mon_b', ['line b0'])]
    batch.clear()
    assert batch.get_count() == 0 and not batch


def test_write_batch_accepts_the_hosts_dict_container(conf, monkeypatch):
    from monasca_persister.repositories.data_points import DataPointsAsDict
    conf.set_override('db_per_tenant', True, 'influxdb')
    repo = MetricsRepository(conf)
    writer = FakeWriter()
    repo.writer = writer
    points = DataPointsAsDict()
    points.append('t1', 'm v=1 1')
    points.append('t2', 'm v=1 2')
    repo.write_batch(points)
    assert sorted(db for db, _ in writer.flushed) == ['mon_t1', 'mon_t2']
