import json
import random

import pytest

from monasca_persister_dbpt.influx import line_protocol as lp
from tests import records


def test_names_are_escaped_like_the_host():
    assert lp.escape_name('a b,c=d') == 'a\\ b\\,c\\=d'
    assert lp.escape_name('plain.name') == 'plain.name'


def test_backslashes_are_written_as_they_are_because_influx_keeps_them():
    # InfluxDB 1.x stores "a\\\\b" for a\\\\b written doubled (the host's bug)
    assert lp.escape_name('C:\\Windows dir') == 'C:\\Windows\\ dir'
    with pytest.raises(lp.InvalidPoint, match='ends with a backslash'):
        lp.escape_name('C:\\')


@pytest.mark.parametrize('text', ['a\nb', 'a\rb', 'a\x00', 'tab\there'])
def test_control_characters_in_names_are_refused(text):
    with pytest.raises(lp.InvalidPoint, match='control character'):
        lp.escape_name(text)


def test_series_key_sorts_tags_and_refuses_time_tag():
    assert lp.series_key('m', {'b': '2', 'a': '1'}) == 'm,a=1,b=2'
    with pytest.raises(lp.InvalidPoint, match='"time"'):
        lp.series_key('m', {'time': 'x'})


@pytest.mark.parametrize('value, text', [
    (1, '1.0'), (2.5, '2.5'), (1e-05, '1e-05'), (-0.0, '-0.0'),
    (True, '1.0'), (False, '0.0'), ('12.5', '12.5'), (' 3 ', '3.0'),
    ('1e3', '1000.0')])
def test_values_are_formatted_as_the_host_formats_floats(value, text):
    assert lp.format_value(value) == text


@pytest.mark.parametrize('value', [float('nan'), float('inf'), 'nan', 'inf',
                                   'abc', '', None, [1], {'a': 1}, 10 ** 400,
                                   '1e400'])
def test_values_the_line_protocol_cannot_carry_are_refused(value):
    with pytest.raises(lp.InvalidPoint):
        lp.format_value(value)


def test_timestamps_are_integer_ms_within_influx_range():
    assert lp.format_time_ms(1700000000123.9) == '1700000000123'
    assert lp.format_time_ms('1700000000123') == '1700000000123'
    assert lp.format_time_ms(True) == '1'
    for bad in (10 ** 20, -10 ** 20, 'x', '1.5', float('nan'), None, [1]):
        with pytest.raises(lp.InvalidPoint):
            lp.format_time_ms(bad)


def _upstream_metric_line(record):
    from monasca_persister.repositories.influxdb.metrics_repository import \
        MetricInfluxdbRepository
    return MetricInfluxdbRepository.process_message(
        records.Message(records.encode(record)))


def _random_text(rnd, alphabet):
    return ''.join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 12)))


def test_metric_lines_are_byte_identical_to_upstream(conf):
    from monasca_persister_dbpt.repositories.metrics import MetricsRepository
    ours = MetricsRepository(conf)
    rnd = random.Random(3)
    # Backslashes aside (see the test above), byte for byte the host's.
    alphabet = 'abcXYZ019 ,="\'._-/é€ü{}[]:'
    for i in range(500):
        dims = {_random_text(rnd, alphabet): _random_text(rnd, alphabet)
                for _ in range(rnd.randint(0, 5))}
        dims.pop('time', None)
        vm = ({_random_text(rnd, alphabet): _random_text(rnd, alphabet)}
              if rnd.random() < 0.5 else rnd.choice([None, {}]))
        record = records.metric(
            'tenant%d' % (i % 7), name=_random_text(rnd, alphabet),
            dimensions=dims, timestamp=rnd.choice(
                [1700000000000 + i, 1.7e12 + i + 0.5]),
            value=rnd.choice([i, i * 0.1, -1e-7, 1e300]), value_meta=vm,
            region=_random_text(rnd, alphabet))
        assert ours.process_message(records.Message(
            records.encode(record))) == _upstream_metric_line(record)


def test_alarm_lines_are_byte_identical_to_upstream(conf):
    from monasca_persister.repositories.influxdb import \
        alarm_state_history_repository as upstream
    from monasca_persister_dbpt.repositories.alarm_state_history import \
        AlarmStateHistoryRepository

    class _NoClientUpstream(upstream.AlarmStateHistInfluxdbRepository):
        def __init__(self):  # upstream's needs the global CONF; unused here
            pass

    theirs = _NoClientUpstream()
    ours = AlarmStateHistoryRepository(conf)
    for i, reason in enumerate(['plain', 'with "quotes" and \\ and\nnewline',
                                'unicodé €', '']):
        record = records.alarm('t%d' % i, alarm_id='id %d' % i,
                               timestamp=1700000000000 + i, reason=reason)
        record['alarm-transitioned']['link'] = 'http://x/y' if i % 2 else None
        message = records.Message(json.dumps(record).encode())
        assert ours.process_message(message) == \
            theirs.process_message(message)


def test_integers_beyond_64_bits_are_written_exactly_as_upstream_writes_them(
        conf):
    from monasca_persister_dbpt.repositories.metrics import MetricsRepository
    ours = MetricsRepository(conf)
    record = records.metric('t', timestamp=1700000000000,
                            dimensions={'big': 2 ** 70},
                            value_meta={'n': -2 ** 64, 'list': [10 ** 30]})
    line, _ = ours.process_message(records.Message(records.encode(record)))
    assert line == _upstream_metric_line(record)[0]
    assert str(2 ** 70) in line and str(10 ** 30) in line
