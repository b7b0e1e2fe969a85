"""The alarm history driver: ``[repositories] alarm_state_history_driver``.

Writes upstream's ``alarm_state_history`` point (tag ``tenant_id``, string
fields) into the tenant's own database, where monasca-api looks for it.
"""

from __future__ import annotations

import json

from monasca_persister_dbpt.influx import line_protocol as lp
from monasca_persister_dbpt.limits import LimitsTable, TenantLimits
from monasca_persister_dbpt.repositories.base import ExactJsonNeeded
from monasca_persister_dbpt.repositories.base import RecordRejected
from monasca_persister_dbpt.repositories.base import inexact
from monasca_persister_dbpt.repositories.base import TenantRepository

# Upstream renames these sub-alarm keys to snake case in the stored JSON.
_SNAKE = (('"subAlarmExpression":', '"sub_alarm_expression":'),
          ('"currentValues":', '"current_values":'),
          ('"metricDefinition":', '"metric_definition":'),
          ('"subAlarmState":', '"sub_alarm_state":'))


def _text(value, name: str) -> str:
    if value is None:
        return ''
    if isinstance(value, (dict, list, bool)):
        raise RecordRejected('%s %r is not a string' % (name, value))
    return str(value)


class AlarmStateHistoryRepository(TenantRepository):
    kind = 'alarm transition'

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Of the limits only ``blocked`` applies to alarm history: a
        # dropped tenant's late transitions must not recreate its database.
        self._limits_of = LimitsTable.from_group(
            self.conf.dbpt, self.placements.tenant_overrides)

    @staticmethod
    def tenant_in(record):
        return record['alarm-transitioned']['tenantId']

    def to_line(self, record: dict, exact: bool = False) -> tuple[str, str]:
        alarm = record['alarm-transitioned']
        if not exact and inexact(alarm):
            raise ExactJsonNeeded()
        tenant_id = alarm['tenantId']
        self.placements.place(tenant_id)
        TenantLimits.check_blocked(self._limits_of(tenant_id), tenant_id)
        sub_alarms = alarm['subAlarms']
        if sub_alarms:
            sub_json = json.dumps(sub_alarms, ensure_ascii=False)
            for camel, snake in _SNAKE:
                sub_json = sub_json.replace(camel, snake)
        else:
            sub_json = '[]'
        field = lp.escape_string_field
        fields = ','.join((
            'tenant_id=' + field(tenant_id),
            'alarm_id=' + field(_text(alarm['alarmId'], 'alarmId')),
            'metrics=' + field(json.dumps(alarm['metrics'],
                                          ensure_ascii=False)),
            'new_state=' + field(_text(alarm['newState'], 'newState')),
            'old_state=' + field(_text(alarm['oldState'], 'oldState')),
            'link=' + field(_text(alarm.get('link'), 'link')),
            'lifecycle_state=' + field(_text(alarm.get('lifecycleState'),
                                             'lifecycleState')),
            'reason=' + field(_text(alarm['stateChangeReason'],
                                    'stateChangeReason')),
            'reason_data=' + field('{}'),
            'sub_alarms=' + field(sub_json),
        ))
        key = lp.series_key('alarm_state_history', {'tenant_id': tenant_id})
        return ('%s %s %s' % (key, fields,
                              lp.format_time_ms(alarm['timestamp'])),
                tenant_id)
