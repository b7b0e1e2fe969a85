"""Hostile Kafka records: each must be refused with a reason, alone.

Only records that upstream's driver cannot store either, or that are on
the documented table of what we refuse and upstream stores (see
doc/source/errors.rst): booleans, numeric strings, non-string dimension
values and value_meta of any JSON type are stored as upstream stores them.

Every entry is ``(topic, payload, words the refusal must contain)``. Built
from valid records so that each breaks exactly one thing.
"""

from __future__ import annotations

import json

from tests import records

T = 'hostile0tenant'
TS = 1700000000000


def _m(**changes) -> dict:
    rec = records.metric(T, timestamp=TS)
    for path, value in changes.items():
        target = rec
        keys = path.split('__')
        for key in keys[:-1]:
            target = target[key]
        if value is _DELETE:
            del target[keys[-1]]
        else:
            target[keys[-1]] = value
    return rec


def _a(**changes) -> dict:
    rec = records.alarm(T, timestamp=TS)
    body = rec['alarm-transitioned']
    for key, value in changes.items():
        if value is _DELETE:
            del body[key]
        else:
            body[key] = value
    return rec


_DELETE = object()
M, A = 'metrics', 'alarm-state-transitions'


def _raw(text: str) -> bytes:
    return text.encode('utf-8')


def _enc(rec) -> bytes:
    return json.dumps(rec).encode('utf-8')


METRICS = [
    (b'', 'malformed JSON'),
    (b'not json at all', 'malformed JSON'),
    (b'{"metric": {"name": "x"', 'malformed JSON'),
    (b'\xff\xfe\x00garbage', 'malformed JSON'),
    (b'[]', 'expected shape'),
    (b'"just a string"', 'expected shape'),
    (b'null', 'expected shape'),
    (b'42', 'expected shape'),
    (_enc({'meta': {'tenantId': T, 'region': 'r'}}), "missing field 'metric'"),
    (_enc(_m(meta=_DELETE)), "missing field 'meta'"),
    (_enc(_m(meta__tenantId=_DELETE)), "missing field 'tenantId'"),
    (_enc(_m(meta__region=_DELETE)), "missing field 'region'"),
    (_enc(_m(metric__name=_DELETE)), "missing field 'name'"),
    (_enc(_m(metric__value=_DELETE)), "missing field 'value'"),
    (_enc(_m(metric__timestamp=_DELETE)), "missing field 'timestamp'"),
    (_enc(_m(metric=[1, 2])), 'expected shape'),
    (_enc(_m(meta__tenantId='')), 'tenant id'),
    (_enc(_m(meta__tenantId='.')), 'tenant id'),
    (_enc(_m(meta__tenantId='..')), 'tenant id'),
    (_enc(_m(meta__tenantId='../etc')), 'tenant id'),
    (_enc(_m(meta__tenantId='a/b')), 'tenant id'),
    (_enc(_m(meta__tenantId='a\\b')), 'tenant id'),
    (_enc(_m(meta__tenantId='a"b')), 'tenant id'),
    (_enc(_m(meta__tenantId="a'b")), 'tenant id'),
    (_enc(_m(meta__tenantId='a b')), 'tenant id'),
    (_enc(_m(meta__tenantId='a\nb')), 'tenant id'),
    (_enc(_m(meta__tenantId='a\x00b')), 'tenant id'),
    (_enc(_m(meta__tenantId='x' * 300)), 'tenant id'),
    (_enc(_m(meta__tenantId=12345)), 'tenant id'),
    (_enc(_m(meta__tenantId=None)), 'tenant id'),
    (_enc(_m(meta__tenantId='tenant;DROP DATABASE mon')), 'tenant id'),
    (_raw('{"metric": {"name": "n", "dimensions": {}, "timestamp": %d, '
          '"value": NaN}, "meta": {"tenantId": "%s", "region": "r"}}'
          % (TS, T)), 'not finite'),
    (_raw('{"metric": {"name": "n", "dimensions": {}, "timestamp": %d, '
          '"value": Infinity}, "meta": {"tenantId": "%s", "region": "r"}}'
          % (TS, T)), 'not finite'),
    (_raw('{"metric": {"name": "n", "dimensions": {}, "timestamp": %d, '
          '"value": -Infinity}, "meta": {"tenantId": "%s", "region": "r"}}'
          % (TS, T)), 'not finite'),
    (_enc(_m(metric__value='twelve')), 'not a number'),
    (_enc(_m(metric__value='nan')), 'not finite'),
    (_enc(_m(metric__value='')), 'not a number'),
    (_enc(_m(metric__value=None)), 'not a number'),
    (_enc(_m(metric__value={'v': 1})), 'not a number'),
    (_enc(_m(metric__value=10 ** 400)), 'out of the range'),
    (_enc(_m(metric__timestamp='yesterday')), 'timestamp'),
    (_enc(_m(metric__timestamp=10 ** 20)), 'timestamp'),
    (_enc(_m(metric__timestamp='1.5')), 'whole number'),
    (_enc(_m(metric__name='')), 'measurement is empty'),
    (_enc(_m(metric__name='cpu\nidle')), 'control character'),
    (_enc(_m(metric__name='cpu\ridle')), 'control character'),
    (_enc(_m(metric__name='a\\"b')), 'backslash together'),
    (_enc(_m(metric__name='#cpu')), 'starts with "#"'),
    (_enc(_m(metric__name='n' * 70000)), 'over max_name_length 255'),
    (_enc(_m(metric__dimensions={'host': 'a\nb'})), 'control character'),
    (_enc(_m(metric__dimensions={'ho\nst': 'a'})), 'control character'),
    (_enc(_m(metric__dimensions={'host': ''})), 'empty'),
    (_enc(_m(metric__dimensions={'device': 'C:\\'})), 'ends with a backslash'),
    (_enc(_m(metric__dimensions={'': 'a'})), 'empty'),
    (_enc(_m(metric__dimensions={'time': 'now'})), 'tag key "time"'),
    (_enc(_m(metric__dimensions=['host', 'a'])), 'not an object'),
    (_enc(_m(meta__region='')), 'empty'),
]

ALARMS = [
    (b'{', 'malformed JSON'),
    (b'{}', "missing field 'alarm-transitioned'"),
    (_enc(_a(tenantId=_DELETE)), "missing field 'tenantId'"),
    (_enc(_a(tenantId='../x')), 'tenant id'),
    (_enc(_a(tenantId='a"b')), 'tenant id'),
    (_enc(_a(tenantId=None)), 'tenant id'),
    (_enc(_a(alarmId=_DELETE)), "missing field 'alarmId'"),
    (_enc(_a(newState=_DELETE)), "missing field 'newState'"),
    (_enc(_a(subAlarms=_DELETE)), "missing field 'subAlarms'"),
    (_enc(_a(timestamp='soon')), 'timestamp'),
    (_enc(_a(timestamp=float('nan'))), 'timestamp'),
    (_enc(_a(newState={'x': 1})), 'not a string'),
    (_enc({'alarm-transitioned': 'nope'}), 'expected shape'),
]

CORPUS = [(M, payload, reason) for payload, reason in METRICS] + \
         [(A, payload, reason) for payload, reason in ALARMS]
