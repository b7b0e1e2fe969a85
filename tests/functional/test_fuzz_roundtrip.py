"""Fuzzing record parsing and escaping against a real influxd.

Any record either becomes a line that InfluxDB accepts and reads back to the
same measurement, tags, value and value_meta, or is refused with a reason.
"""

import itertools
import json
import logging

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from monasca_persister_dbpt.repositories.metrics import MetricsRepository
from tests import records

TEXT = st.text(st.characters(codec='utf-8', exclude_categories=['Cs']),
               min_size=0, max_size=12)
NASTY = st.sampled_from(['', ' ', ',', '=', '\\', '"', "'", '\n', 'a\\ b',
                         'x\\', 'time', '_tenant_id', 'é€', '\t', '\x00'])
NAME = st.one_of(TEXT, TEXT, NASTY,
                 st.text('ab ,=\\"', min_size=1, max_size=6))
FINITE = st.floats(allow_nan=False, allow_infinity=False)
VALUE = st.one_of(FINITE, FINITE, FINITE, st.integers(-2 ** 53, 2 ** 53),
                  st.floats(), st.integers(), st.booleans(), st.none(),
                  st.text(max_size=3))
GOOD_TS = st.integers(min_value=0, max_value=4102444800000)
COUNTER = itertools.count()


@settings(max_examples=500, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(name=NAME, dims=st.dictionaries(NAME, NAME, max_size=4),
       value=VALUE, meta=st.one_of(st.none(), st.dictionaries(
           TEXT, TEXT, max_size=2)),
       ts=st.one_of(GOOD_TS, GOOD_TS, GOOD_TS, st.integers(), st.floats()))
def test_every_record_round_trips_or_is_refused_with_a_reason(
        influx_fuzz, caplog, name, dims, value, meta, ts):
    round_trip_or_refusal(influx_fuzz, caplog, name, dims, value, meta, ts)


PRINTABLE = st.text(st.characters(codec='utf-8',
                                  exclude_categories=['Cs', 'Cc']),
                    min_size=1, max_size=12).filter(
                        lambda t: not t.endswith('\\') and t != 'time')


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(name=PRINTABLE, dims=st.dictionaries(PRINTABLE, PRINTABLE, max_size=4),
       value=FINITE, meta=st.one_of(st.none(), st.dictionaries(
           TEXT, TEXT, max_size=2)), ts=GOOD_TS)
def test_printable_records_round_trip(influx_fuzz, caplog, name, dims, value,
                                      meta, ts):
    round_trip_or_refusal(influx_fuzz, caplog, name, dims, value, meta, ts)


def round_trip_or_refusal(influx_fuzz, caplog, name, dims, value, meta, ts):
    influx, repo = influx_fuzz
    region = 'r%d' % next(COUNTER)
    record = records.metric('fuzz', name=name, dimensions=dims,
                            timestamp=ts, value=value, value_meta=meta,
                            region=region)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        line, tenant = repo.process_message(
            records.Message(json.dumps(record).encode()))
    if line is None:
        refusals = [r.getMessage() for r in caplog.records
                    if 'refused' in r.getMessage()]
        assert len(refusals) == 1 and ': ' in refusals[0]
        event('refused: ' + refusals[0].split(': ', 1)[1][:25])
        return
    event('written')
    batch = repo.data_points_class()
    batch.append(tenant, line)
    repo.write_batch(batch)
    assert repo.stats.total('dropped_bad_request') == 0, line
    # Fields and tags apart: a dimension may be named like a field
    # ("value_meta"), and InfluxDB keeps both.
    results = influx.query("SELECT * FROM /.*/ WHERE \"_region\" = '%s' "
                           "GROUP BY *" % region.replace("'", "\\'"),
                           'mon_fuzz')
    rows = [(series['name'], dict(zip(series['columns'], values)),
             series.get('tags') or {})
            for result in results for series in result.get('series', [])
            for values in series.get('values') or []]
    assert len(rows) == 1, line
    ((measurement, row, tags),) = rows
    assert measurement == name
    assert row['time'] == int(ts)
    assert float(row['value']) == float(value)
    assert json.loads(row['value_meta']) == (meta or {})
    # GROUP BY * lists every tag key of the measurement; '' is "absent"
    # (we never write an empty tag value).
    expected = dict(dims, _tenant_id='fuzz', _region=region)
    assert {k: v for k, v in tags.items() if v} == expected


import pytest  # noqa: E402


@pytest.fixture(scope='module')
def influx_fuzz(influx_server):
    from oslo_config import cfg

    from monasca_persister_dbpt import conf as dbpt_conf
    influx_server.drop_all()
    conf = cfg.ConfigOpts()
    dbpt_conf.register_opts(conf)
    conf([], project='dbpt-fuzz', default_config_files=[])
    conf.set_override('ip_address', influx_server.host, 'influxdb')
    conf.set_override('port', influx_server.port, 'influxdb')
    conf.set_override('db_per_tenant', True, 'influxdb')
    conf.set_override('stats_interval', 0, 'dbpt')
    conf.set_override('max_delay', 0, 'dbpt')  # each example written at once
    return influx_server, MetricsRepository(conf)
