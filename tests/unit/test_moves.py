"""Moves between servers, pure parts: the template read backwards, the move
table a reader keeps, and the bounding and merging of monasca-api queries."""

import pytest

from monasca_persister_dbpt.api import merge
from monasca_persister_dbpt.migrate.rebalance import MoveJob, MovePlanner
from monasca_persister_dbpt.placement import PlacementMap, Server
from monasca_persister_dbpt.placement import moves

A, B, C = Server('a'), Server('b'), Server('c')


@pytest.mark.parametrize('template, database, tenant', [
    ('{database_name}_{tenant_id}', 'mon_abc', 'abc'),
    ('{database_name}_{tenant_id}', 'mon_', None),
    ('{database_name}_{tenant_id}', 'mon', None),
    ('{database_name}_{tenant_id}', 'other_abc', None),
    ('t-{tenant_id}-{database_name}', 't-x.y-mon', 'x.y'),
    ('t-{tenant_id}-{database_name}', 't-x.y-monx', None),
    ('{tenant_id}', '_internal', None),
    ('{tenant_id}', '_dbpt_moves', None),
    ('{tenant_id}', 'bad tenant', None),
])
def test_a_database_name_gives_back_its_tenant_or_none(template, database,
                                                       tenant):
    placements = PlacementMap(database_template=template)
    assert placements.tenant_of(database) == tenant
    if tenant is not None:
        assert placements.place(tenant).database == database


def _table(answers):
    return moves.MoveTable([A, B, C], lambda server: answers[server],
                           PlacementMap().tenant_of, every=0)


def test_a_tenant_with_one_copy_is_read_from_its_home_alone():
    table = _table({A: ({'mon_t'}, []), B: (set(), []), C: (set(), [])})
    assert table.parts('t', A) == [moves.Part(A)]


def test_an_unmarked_stray_copy_is_read_together_with_home():
    table = _table({A: ({'mon_t'}, []), B: ({'mon_t'}, []), C: (set(), [])})
    assert table.parts('t', B) == [moves.Part(A), moves.Part(B)]


def test_a_copying_move_splits_reads_at_its_time_and_a_verified_one_ends():
    copying = moves.Move('t', A.url, 1000, moves.COPYING)
    table = _table({A: ({'mon_t'}, []), B: ({'mon_t'}, [copying]),
                    C: (set(), [])})
    assert table.parts('t', B) == [moves.Part(A, upper=1000),
                                   moves.Part(B, lower=1000)]
    verified = moves.Move('t', A.url, 1000, moves.VERIFIED)
    table = _table({A: ({'mon_t'}, []), B: ({'mon_t'}, [verified]),
                    C: (set(), [])})
    assert table.parts('t', B) == [moves.Part(B)]


def test_a_marker_on_another_server_than_home_does_not_count():
    # The tenant moved on again (to C): B's marker says nothing about C.
    verified = moves.Move('t', A.url, 1000, moves.VERIFIED)
    table = _table({A: ({'mon_t'}, []), B: (set(), [verified]),
                    C: ({'mon_t'}, [])})
    assert table.parts('t', C) == [moves.Part(A), moves.Part(C)]


def test_a_server_that_cannot_be_asked_keeps_its_last_answer():
    answers = {A: ({'mon_t'}, []), B: ({'mon_t'}, []), C: (set(), [])}
    table = _table(answers)
    assert len(table.parts('t', B)) == 2

    def broken(server):
        if server == A:
            raise ConnectionError('down')
        return answers[server]
    table._look = broken
    table.refresh(force=True)
    assert len(table.parts('t', B)) == 2


def test_markers_round_trip_through_line_protocol():
    move = moves.Move('proj-1', 'http://a:8086', 123456789, moves.VERIFIED)
    line = moves.marker_line(move)
    assert line == ('move,source=http://a:8086,tenant=proj-1 '
                    'split=123456789i,state="verified" 0')
    result = {'series': [{'name': 'move', 'tags': {
        'source': 'http://a:8086', 'tenant': 'proj-1'},
        'columns': ['time', 'split', 'state'],
        'values': [[0, 123456789, 'verified']]}]}
    assert moves.parse_markers(result) == [move]


QUERY = ('select value, value_meta  from  "cpu"  where _region = '
         "'r group by x' and \"h\" =~ /^a limit 1$/ and time >= 5u "
         'group by * limit 11 ')


def test_a_time_bound_goes_at_the_end_of_the_where_clause_whatever_is_quoted():
    assert merge.bound(QUERY, 7, 9) == (
        'select value, value_meta  from  "cpu"  where _region = '
        "'r group by x' and \"h\" =~ /^a limit 1$/ and time >= 5u and "
        'time >= 7 and time < 9  group by * limit 11 ')
    assert merge.bound(QUERY, None, None) == QUERY
    assert merge.bound('select * from "x"', None, 3) == \
        'select * from "x" where time < 3 '
    assert merge.limit_of(QUERY) == 11
    assert merge.slimit_of(QUERY + ' slimit 1') == 1
    assert merge.slimit_of(QUERY) is None


def test_show_answers_are_united_then_paged():
    query, limit, offset = merge.strip_paging(
        "show series  where _region = 'r' limit 3 offset 1")
    assert (query.strip(), limit, offset) == (
        "show series  where _region = 'r'", 3, 1)
    one = {'series': [{'columns': ['key'], 'values': [['a'], ['c']]}]}
    two = {'series': [{'columns': ['key'], 'values': [['b'], ['c'], ['d'],
                                                      ['e']]}]}
    assert merge.merge_show([one, two], 3, 1)['series'][0]['values'] == [
        ['b'], ['c'], ['d']]


def test_rows_are_merged_in_time_order_once_then_limited():
    one = {'series': [{'name': 'cpu', 'tags': {'h': '1'},
                       'columns': ['time', 'value'],
                       'values': [['2026-01-01T00:00:00Z', 1],
                                  ['2026-01-01T00:00:01.5Z', 2]]}]}
    two = {'series': [{'name': 'cpu', 'tags': {'h': '1'},
                       'columns': ['time', 'value'],
                       'values': [['2026-01-01T00:00:01.5Z', 2],
                                  ['2026-01-01T00:00:01Z', 9],
                                  ['2026-01-01T00:00:02Z', 3]]}]}
    merged = merge.merge_rows([one, two], limit=3)
    assert merged['series'][0]['values'] == [
        ['2026-01-01T00:00:00Z', 1], ['2026-01-01T00:00:01Z', 9],
        ['2026-01-01T00:00:01.5Z', 2]]
    assert merge.merge_rows([{}, {}], None) == {'statement_id': 0}


def test_statistics_combine_the_period_both_servers_hold_exactly():
    columns = ['time', 'min', 'max', 'count', 'sum']
    one = {'series': [{'name': 'cpu', 'columns': columns, 'values': [
        ['t0', 1.0, 5.0, 2, 6.0], ['t1', 2.0, 2.0, 1, 2.0]]}]}
    two = {'series': [{'name': 'cpu', 'columns': columns, 'values': [
        ['t1', 0.0, 8.0, 3, 12.0], ['t2', 4.0, 4.0, 1, 4.0]]}]}
    merged = merge.merge_statistics([one, two], ['mean', 'min', 'max',
                                                 'count', 'sum'], limit=2)
    series = merged['series'][0]
    assert series['columns'] == ['time', 'mean', 'min', 'max', 'count',
                                 'sum']
    assert series['values'] == [['t0', 3.0, 1.0, 5.0, 2, 6.0],
                                ['t1', 3.5, 0.0, 8.0, 4, 14.0]]


def _policies(*rows):
    """A source answering SHOW RETENTION POLICIES with *rows*."""
    columns = ['name', 'duration', 'shardGroupDuration', 'replicaN',
               'default']

    def run(statement):
        assert statement.startswith('SHOW RETENTION POLICIES'), statement
        return [{'series': [{'columns': columns,
                             'values': [list(r) for r in rows]}]}]
    return run


def test_a_move_sends_each_policy_to_its_own_and_keeps_other_tenants_out():
    placements = PlacementMap(default_retention_hours=24,
                              tiers=_tiers('1h:8w'))
    placement = placements.place('t')
    tier = placement.tiers[0].policy
    planner = MovePlanner(_policies(
        ('autogen', '0s', '168h0m0s', 1, True),
        (tier.name, '1344h0m0s', '168h0m0s', 1, False),
        ('tier_5m', '672h0m0s', '24h0m0s', 1, False)), placements,
        MoveJob('t', 'mon_t', A, placement))
    assert planner.target_policy(placement, tier.name) == tier.name
    assert planner.target_hours(placement, tier.name) == 8 * 7 * 24
    assert planner.target_policy(placement, 'autogen') is None
    assert planner.target_hours(placement, 'autogen') == 24
    # A policy the placement does not know keeps its name and duration:
    # never the raw policy.
    assert planner.target_policy(placement, 'tier_5m') == 'tier_5m'
    assert planner.target_hours(placement, 'tier_5m') == 4 * 7 * 24
    assert [r['name'] for r in planner.kept_policies()] == ['tier_5m']
    assert planner.accepts('t') is None
    assert 'tenant' in planner.accepts('u')
    assert planner.lower_for(placement, tier.name) < \
        planner.lower_for(placement, 'autogen')


def _tiers(text):
    from monasca_persister_dbpt.placement import parse_tiers
    return parse_tiers([text])


def test_grouping_reads_the_tags_a_statistics_query_groups_by():
    base = 'select count(value) from "m" where _region = \'a group by b\''
    assert merge.grouping(base + ' group by time(60s) fill(none)') is None
    assert merge.grouping(base + ' group by *,time(60s) fill(none)') == '*'
    assert merge.grouping(base + ' group by hostname,"a b",time(60s)') == \
        ['hostname', 'a b']


def test_stragglers_are_the_old_points_the_new_server_lacks_per_period():
    old = {'series': [{'name': 'cpu', 'tags': {'hostname': 'h0', 'x': '1'},
                       'columns': ['time', 'value'],
                       'values': [[0, 1.0], [30 * 10 ** 9, 3.0],
                                  [60 * 10 ** 9, 5.0], [90 * 10 ** 9, 'x']]}]}
    new = merge.point_keys({'series': [{
        'name': 'cpu', 'tags': {'hostname': 'h0', 'x': '1'},
        'columns': ['time', 'value'], 'values': [[60 * 10 ** 9, 5.0]]}]})
    plain = merge.stragglers(old, new, None, 60)
    assert plain == {'series': [{
        'name': 'cpu', 'columns': ['time', 'min', 'max', 'count', 'sum'],
        'values': [['1970-01-01T00:00:00Z', 1.0, 3.0, 2, 4.0]]}]}
    by_host = merge.stragglers(old, new, ['hostname'], 60)['series'][0]
    assert by_host['tags'] == {'hostname': 'h0'}
    assert merge.stragglers(old, new, '*', 60)['series'][0]['tags'] == \
        {'hostname': 'h0', 'x': '1'}
    # Merged with the servers' own periods, exactly.
    server = {'series': [{'name': 'cpu', 'columns': ['time', 'min', 'max',
                                                     'count', 'sum'],
                          'values': [['1970-01-01T00:00:00Z', 2.0, 2.0, 1,
                                      2.0]]}]}
    merged = merge.merge_statistics([server, plain], ['count', 'mean'], None)
    assert merged['series'][0]['values'] == [['1970-01-01T00:00:00Z', 3,
                                              2.0]]
