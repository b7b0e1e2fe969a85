"""The database template is proven one-to-one when the mapping is built."""

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monasca_persister_dbpt.placement import InvalidOption
from monasca_persister_dbpt.placement import InvalidTenantId
from monasca_persister_dbpt.placement import PlacementMap

OPTION = r'\[dbpt\] database_template'


@pytest.mark.parametrize('template, why', [
    ('mon_{{tenant_id}}', 'no {tenant_id}'),
    ('{database_name}', 'no {tenant_id}'),
    ('{tenant_id:.4}', 'format spec'),
    ('{tenant_id!r}', 'conversion'),
    ('{tenant_id[0]}', 'unknown placeholder'),
    ('{tenant_id.upper}', 'unknown placeholder'),
    ('{region}_{tenant_id}', 'unknown placeholder {region}'),
    ('{}_{tenant_id}', 'unknown placeholder'),
    ('{0}', 'unknown placeholder'),
    ('{tenant_id}_{tenant_id}', 'more than once'),
    ('mon_{tenant_id', 'brace'),
    ('mon}_{tenant_id}', 'brace'),
    ('a/{tenant_id}', "contains '/'"),
    ('{database_name:>9}_{tenant_id}', 'format spec'),
])
def test_templates_that_could_share_or_break_a_database_are_refused(
        template, why):
    with pytest.raises(InvalidOption, match=OPTION) as exc:
        PlacementMap(database_template=template)
    assert why in str(exc.value)
    assert repr(template) in str(exc.value)


def test_the_check_runs_even_in_shared_database_mode():
    # The migration turns db_per_tenant on; a template must not slip
    # through because the persister's own config had it off.
    with pytest.raises(InvalidOption, match=OPTION):
        PlacementMap(db_per_tenant=False, database_template='{{tenant_id}}')


@pytest.mark.parametrize('template, database', [
    ('{database_name}_{tenant_id}', 'mon_t1'),
    ('{{x}}{tenant_id}', '{x}t1'),
    ('{tenant_id}-{database_name}', 't1-mon'),
    ('{database_name}{database_name}{tenant_id}', 'monmont1'),
    ('{tenant_id}', 't1'),
])
def test_accepted_templates_render_literals_and_fixed_placeholders(
        template, database):
    assert PlacementMap(database_template=template).place('t1').database == \
        database


@pytest.mark.parametrize('template, tenant', [
    ('{tenant_id}', 'mon'),            # the shared database itself
    ('{tenant_id}', '_internal'),      # InfluxDB's own
    ('_{tenant_id}', 'internal'),
    ('{tenant_id}_x', 'mon'),          # fine: 'mon_x' is not reserved
])
def test_no_tenant_is_written_to_a_reserved_database(template, tenant):
    pm = PlacementMap(database_template=template)
    database = pm.database_for(tenant)
    if database in ('mon', '_internal'):
        with pytest.raises(InvalidTenantId, match='reserved'):
            pm.place(tenant)
    else:
        assert pm.place(tenant).database == database


_TEMPLATE_PIECES = st.lists(st.one_of(
    st.sampled_from(['{tenant_id}', '{database_name}', '{{', '}}', '{',
                     '}', '{tenant_id:.3}', '{tenant_id!s}', '{tenant_id[1]}',
                     '{region}', '{}', '{{tenant_id}}', '_', '-', '.']),
    st.text(alphabet=string.ascii_letters + string.digits + '_-.',
            min_size=1, max_size=4)), max_size=6)
_TENANT = st.from_regex(r'[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}', fullmatch=True)


@settings(max_examples=400, deadline=None)
@given(_TEMPLATE_PIECES, _TENANT, _TENANT)
def test_every_accepted_template_gives_distinct_databases_to_distinct_tenants(
        pieces, a, b):
    template = ''.join(pieces)
    try:
        pm = PlacementMap(database_template=template)
    except InvalidOption as exc:
        assert '[dbpt] database_template' in str(exc)
        return
    if a == b:
        return
    try:
        da = pm.place(a).database
        db = pm.place(b).database
    except InvalidTenantId:
        return
    assert da != db
    assert da not in pm.reserved and db not in pm.reserved
