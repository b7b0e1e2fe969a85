import uuid

import pytest

from monasca_persister_dbpt import placement
from monasca_persister_dbpt.placement import InvalidDuration
from monasca_persister_dbpt.placement import InvalidTenantId
from monasca_persister_dbpt.placement import PlacementMap


def test_keystone_project_ids_get_mon_underscore_id_databases():
    pm = PlacementMap()
    for tenant in (uuid.uuid4().hex, str(uuid.uuid4()), 'default',
                   'admin_project', 'a.b-c_d'):
        assert pm.place(tenant).database == 'mon_' + tenant


@pytest.mark.parametrize('tenant', [
    '', '.', '..', '../x', 'a/b', 'a\\b', 'a"b', "a'b", 'a b', 'a\tb',
    'a\nb', 'a\x00b', 'a\x7fb', 'x' * 65, 'é', None, 7, ['a'],
])
def test_tenant_ids_that_cannot_name_a_database_are_refused(tenant):
    with pytest.raises(InvalidTenantId) as exc:
        PlacementMap().place(tenant)
    assert 'tenant id' in str(exc.value)


def test_a_loose_pattern_still_refuses_what_influxdb_cannot_store():
    pm = PlacementMap(tenant_id_pattern='.*')
    assert pm.place('any:thing+goes').database == 'mon_any:thing+goes'
    for tenant in ('..', 'a/b', 'a"b', 'a\nb', ''):
        with pytest.raises(InvalidTenantId):
            pm.place(tenant)
    with pytest.raises(InvalidTenantId, match='255 bytes'):
        pm.place('x' * 300)


def test_refusal_names_the_pattern_that_failed():
    with pytest.raises(InvalidTenantId, match='tenant_id_pattern'):
        PlacementMap(tenant_id_pattern='[a-f0-9]{32}').place('abc')


def test_database_template_is_configurable():
    pm = PlacementMap(database_name='monasca',
                      database_template='{database_name}-t-{tenant_id}')
    assert pm.place('p1').database == 'monasca-t-p1'


def test_template_without_tenant_id_is_refused_at_start():
    with pytest.raises(ValueError, match='tenant_id'):
        PlacementMap(database_template='{database_name}')


def test_shared_database_mode_places_every_tenant_in_database_name():
    pm = PlacementMap(db_per_tenant=False, default_retention_hours=24)
    assert pm.place('a').database == pm.place('b').database == 'mon'
    assert pm.place('a').retention.name == '24h'


def test_default_retention_hours_keeps_upstream_policy_name():
    rp = PlacementMap(default_retention_hours=72).place('t').retention
    assert (rp.name, rp.hours, rp.duration) == ('72h', 72, '72h')
    assert PlacementMap().place('t').retention.duration == 'INF'
    assert PlacementMap(db_per_tenant=False).place('t').retention is None


def test_overrides_win_over_the_default_for_their_tenant_only():
    pm = PlacementMap(default_retention_hours=24,
                      retention_overrides=placement.parse_overrides(
                          'project:2w,project2:1d'))
    assert pm.place('project').retention.name == '2w'
    assert pm.place('project').retention.hours == 336
    assert pm.place('project2').retention.hours == 24
    assert pm.place('other').retention.name == '24h'


@pytest.mark.parametrize('text, name, hours', [
    ('2w', '2w', 336), ('1d', '1d', 24), ('12h', '12h', 12),
    ('5', '5h', 5), ('inf', 'inf', None), (' 3d ', '3d', 72),
])
def test_durations_parse_in_hours(text, name, hours):
    rp = placement.parse_duration(text)
    assert (rp.name, rp.hours) == (name, hours)


def test_bare_numbers_take_the_given_unit():
    assert placement.parse_duration('2', bare_unit='w').hours == 336


@pytest.mark.parametrize('text', ['2x', 'w', '', '-1d', '1.5d', '0h', '2 w',
                                  'project'])
def test_bad_durations_are_refused_naming_the_value(text):
    with pytest.raises(InvalidDuration) as exc:
        placement.parse_duration(text)
    assert repr(text.strip() if text.strip() else text)[1:-1] in str(exc.value)


def test_bad_override_names_the_project():
    with pytest.raises(InvalidDuration, match='project2'):
        placement.parse_overrides('project:2w,project2:2x')
    with pytest.raises(InvalidDuration, match='project:duration'):
        placement.parse_overrides('project')


def test_shard_duration_is_applied_and_validated():
    pm = PlacementMap(default_retention_hours=24, shard_duration='1h')
    assert pm.place('t').retention.shard_duration == '1h'
    for bad in ('soon', '24', '1.5d', '0h'):
        with pytest.raises(placement.InvalidOption,
                           match=r'\[dbpt\] shard_duration'):
            PlacementMap(shard_duration=bad)


def test_from_conf_reads_host_and_own_groups(conf):
    conf.set_override('database_name', 'monasca', 'influxdb')
    conf.set_override('db_per_tenant', True, 'influxdb')
    conf.set_override('default_retention_hours', 48, 'influxdb')
    conf.set_override('ip_address', '10.0.0.5', 'influxdb')
    conf.set_override('retention_overrides', {'p': '1w'}, 'dbpt')
    pm = PlacementMap.from_conf(conf)
    p = pm.place('p')
    assert p.database == 'monasca_p'
    assert p.server.url == 'http://10.0.0.5:8086'
    assert p.retention.hours == 168
    assert pm.place('q').retention.name == '48h'


def _servers():
    base = placement.Server('127.0.0.1', 8086, user='u', password='p')
    return base, {'a': placement.parse_server('http://10.0.0.2:8087', base),
                  'b': placement.parse_server('https://h3', base)}


def test_servers_parse_with_the_default_credentials():
    _, servers = _servers()
    assert servers['a'].url == 'http://10.0.0.2:8087'
    assert servers['b'].url == 'https://h3:8086' and servers['b'].ssl
    assert servers['a'].password == 'p'
    with pytest.raises(ValueError, match='http'):
        placement.parse_server('10.0.0.2:8086', servers['a'])


def test_servers_file_places_tenants_and_is_reread_when_it_changes(
        tmp_path, monkeypatch):
    from monasca_persister_dbpt.placement import overrides as overrides_mod
    monkeypatch.setattr(overrides_mod, 'CHECK_EVERY', 0)
    base, servers = _servers()
    path = tmp_path / 'servers'
    path.write_text('# tenant server\nt1 a\nt2 b  # gold\n')
    pm = PlacementMap(server=base, servers=servers,
                      overrides_file=str(path))
    assert pm.place('t1').server == servers['a']
    assert pm.place('t2').server == servers['b']
    assert pm.place('t3').server == base
    path.write_text('t1 b\n\n')
    assert pm.place('t1').server == servers['b']
    assert pm.place('t2').server == base
    path.write_text('t1 nowhere\n')  # a bad edit keeps the last good map
    assert pm.place('t1').server == servers['b']


def test_bad_servers_file_fails_at_start_naming_the_line(tmp_path):
    base, servers = _servers()
    path = tmp_path / 'servers'
    path.write_text('t1 a\nt2\n')
    with pytest.raises(ValueError, match='line 2'):
        PlacementMap(server=base, servers=servers,
                     overrides_file=str(path))


def test_hash_spreads_other_tenants_stably():
    base, servers = _servers()
    pm = PlacementMap(server=base, servers=servers,
                      hash_servers=['default', 'a', 'b'])
    first = {t: pm.place(t).server for t in ('t%d' % i for i in range(300))}
    again = PlacementMap(server=base, servers=servers,
                         hash_servers=['default', 'a', 'b'])
    assert all(again.place(t).server == s for t, s in first.items())
    counts = [list(first.values()).count(s) for s in
              (base, servers['a'], servers['b'])]
    assert min(counts) > 60
    with pytest.raises(ValueError, match='hash_servers'):
        PlacementMap(server=base, servers=servers, hash_servers=['zz'])


def test_a_tier_may_have_its_own_shard_duration_never_longer_than_itself():
    from monasca_persister_dbpt.placement import parse_tiers
    fine, coarse = parse_tiers('5m:4w,1h:260w:52w')
    assert (fine.policy.shard_duration, coarse.policy.shard_duration) == \
        (None, '52w')
    pm = PlacementMap(tiers=(fine, coarse), shard_duration='7d')
    assert [t.policy.shard_duration for t in pm.place('t').tiers] == \
        ['7d', '52w']
    for bad in ('1h:1w:2w', '1h:1w:3', '1h:1w:2w:1d'):
        with pytest.raises(ValueError, match='retention tier'):
            parse_tiers(bad)


@pytest.mark.parametrize('n', [1, 2, 3, 5, 9])
def test_adding_a_server_moves_about_one_in_n_plus_one_all_to_it(n):
    from monasca_persister_dbpt.placement import rendezvous
    tenants = ['%032x' % i for i in range(10000)]
    before = {name: 1.0 for name in ('s%d' % i for i in range(n))}
    after = dict(before, new=1.0)
    moved = [t for t in tenants
             if rendezvous(t, before) != rendezvous(t, after)]
    assert 0.8 / (n + 1) <= len(moved) / len(tenants) <= 1.2 / (n + 1)
    assert {rendezvous(t, after) for t in moved} == {'new'}


def test_a_weighted_server_gets_its_share():
    from monasca_persister_dbpt.placement import rendezvous
    tenants = ['t%d' % i for i in range(10000)]
    got = [rendezvous(t, {'a': 1.0, 'b': 3.0}) for t in tenants]
    assert 0.70 < got.count('b') / len(got) < 0.80
    base, servers = _servers()
    pm = PlacementMap(server=base, servers=servers,
                      hash_servers=['default', 'a:2'])
    assert pm.server_map.weights == {'default': 1.0, 'a': 2.0}
    for bad in (['a:0'], ['a:x'], ['a', 'a'], [':2']):
        with pytest.raises(ValueError, match='hash_servers'):
            PlacementMap(server=base, servers=servers, hash_servers=bad)
