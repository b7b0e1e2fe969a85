"""Kafka records as monasca-api and monasca-thresh produce them."""

from __future__ import annotations

import json
import random
import threading
import time
from typing import Optional


def metric(tenant: str, name: str = 'cpu.idle_perc',
           dimensions: Optional[dict] = None, timestamp: float = 0,
           value=1.0, value_meta: Optional[dict] = None,
           region: str = 'RegionOne') -> dict:
    return {'metric': {'name': name,
                       'dimensions': dimensions if dimensions is not None
                       else {'hostname': 'host-1', 'service': 'monitoring'},
                       'timestamp': timestamp, 'value': value,
                       'value_meta': value_meta},
            'meta': {'tenantId': tenant, 'region': region},
            'creation_time': 1700000000}


def alarm(tenant: str, alarm_id: str = 'alarm-1', timestamp: int = 0,
          new_state: str = 'ALARM', old_state: str = 'OK',
          reason: str = 'Thresholds were exceeded') -> dict:
    return {'alarm-transitioned': {
        'tenantId': tenant, 'alarmId': alarm_id,
        'alarmDefinitionId': 'def-1', 'alarmName': 'cpu high',
        'alarmDescription': '', 'actionsEnabled': True,
        'metrics': [{'id': None, 'name': 'cpu.idle_perc',
                     'dimensions': {'hostname': 'host-1'}}],
        'oldState': old_state, 'newState': new_state,
        'link': None, 'lifecycleState': None,
        'stateChangeReason': reason, 'severity': 'LOW',
        'subAlarms': [{'subAlarmExpression': {
            'function': 'AVG', 'metricName': 'cpu.idle_perc',
            'dimensions': {}, 'operator': 'LT', 'threshold': 10.0,
            'period': 60, 'periods': 1},
            'subAlarmState': new_state, 'currentValues': [5.0]}],
        'timestamp': timestamp}}


def encode(record) -> bytes:
    return json.dumps(record).encode('utf-8')


def metric_stream(n: int, tenants: list[str], start_ms: int,
                  seed: int = 7, hosts: int = 20,
                  names: int = 10) -> list[bytes]:
    """*n* distinct metric records spread over *tenants* (distinct series
    or timestamps, so that every one is a separate point)."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        tenant = tenants[i % len(tenants)]
        out.append(encode(metric(
            tenant, name='metric.%d' % (i % names),
            dimensions={'hostname': 'host-%d' % (i % hosts),
                        'service': 'svc', 'component': 'c%d' % (i % 3)},
            timestamp=start_ms + i, value=rnd.random() * 100,
            value_meta={'note': 'x'} if i % 50 == 0 else None)))
    return out


class Message:
    """What the host hands a driver: ``value()`` gives the record's bytes."""

    def __init__(self, value: bytes, offset: int = 0,
                 partition: int = 0) -> None:
        self._value = value
        self._offset = offset
        self._partition = partition

    def value(self) -> bytes:
        return self._value

    def topic(self) -> str:
        return 'metrics'

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


def feed(repo, recs):
    """Run records through a driver as the host does for one flush."""
    batch = repo.data_points_class()
    for rec in recs:
        line, tenant = repo.process_message(Message(encode(rec)))
        batch.append(tenant, line)
    repo.write_batch(batch)
    return batch


class Feeder:
    """Produces ``record(tenant, i)`` for *tenants* in turn, in the
    background until the ``with`` block ends, counting per tenant."""

    def __init__(self, broker, topic: str, tenants: list, record,
                 per_tick: int = 30, pause: float = 0.02) -> None:
        self.sent = {t: 0 for t in tenants}
        self._broker, self._topic = broker, topic
        self._tenants, self._record = list(tenants), record
        self._per_tick, self._pause = per_tick, pause
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._feed)

    def _feed(self) -> None:
        producer = self._broker.producer()
        i = 0
        while not self._stop.is_set():
            for _ in range(self._per_tick):
                tenant = self._tenants[i % len(self._tenants)]
                producer.produce(self._topic,
                                 encode(self._record(tenant, i)))
                self.sent[tenant] += 1
                i += 1
            producer.poll(0)
            time.sleep(self._pause)
        assert producer.flush(30) == 0

    def __enter__(self) -> 'Feeder':
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
