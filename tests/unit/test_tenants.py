"""Tenant lifecycle without a server: the overrides file's new keys, the
block, export files, project lists and refusal sources."""

import gzip
import json
import time

import pytest

from monasca_persister_dbpt.influx.schema import Schema
from prometheus_client import CollectorRegistry, generate_latest

from monasca_persister_dbpt.limits.exposition import _Counters
from monasca_persister_dbpt.limits.exposition import read_refusals
from monasca_persister_dbpt.placement import InvalidOption, PlacementMap
from monasca_persister_dbpt.placement import overrides as overrides_mod
from monasca_persister_dbpt.repositories.alarm_state_history import \
    AlarmStateHistoryRepository
from monasca_persister_dbpt.repositories.metrics import MetricsRepository
from monasca_persister_dbpt.tenants import cli
from monasca_persister_dbpt.tenants.archive import MAGIC, Archive
from monasca_persister_dbpt.tenants.archive import ArchiveError
from monasca_persister_dbpt.stats import Stats
from monasca_persister_dbpt.tenants.removal import read_projects
from tests import records


@pytest.fixture
def reread(monkeypatch):
    monkeypatch.setattr(overrides_mod, 'CHECK_EVERY', 0)


def _changed(path, text):
    """Write *text* so that the file's (mtime, size) is seen to change."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    while path.stat().st_mtime_ns == before:
        time.sleep(0.01)
        path.write_text(text)


# -- the overrides file -------------------------------------------------------

def test_set_setting_adds_a_line_or_changes_the_tenants_keeping_comments(
        tmp_path):
    path = tmp_path / 'overrides'
    path.write_text('# ours\nacme max_series=5 blocked=false  # gold\n')
    assert overrides_mod.set_setting(str(path), 'acme', 'blocked', 'true')
    assert overrides_mod.set_setting(str(path), 'gone', 'blocked', 'true')
    assert path.read_text() == ('# ours\nacme max_series=5 blocked=true '
                                '# gold\ngone blocked=true\n')
    assert not overrides_mod.set_setting(str(path), 'gone', 'blocked',
                                         'true')


def test_set_setting_refuses_a_bad_value_and_leaves_the_file(tmp_path):
    path = tmp_path / 'overrides'
    path.write_text('acme max_series=5\n')
    with pytest.raises(ValueError, match='must be true or false'):
        overrides_mod.set_setting(str(path), 'acme', 'blocked', 'perhaps')
    with pytest.raises(InvalidOption, match="'colour' is not a setting"):
        overrides_mod.set_setting(str(path), 'acme', 'colour', 'red')
    assert path.read_text() == 'acme max_series=5\n'
    assert [p.name for p in tmp_path.iterdir()] == ['overrides']


@pytest.mark.parametrize('line, why', [
    ('t blocked=perhaps', "blocked='perhaps': must be true or false"),
    ('t retention=2x', "retention='2x': retention '2x' is not"),
    ('t tiers=5m', "tiers='5m': retention tier '5m' is not"),
])
def test_bad_new_keys_are_refused_naming_the_key_and_line(tmp_path, line,
                                                          why):
    path = tmp_path / 'overrides'
    path.write_text(line + '\n')
    with pytest.raises(InvalidOption, match='line 1') as error:
        PlacementMap(overrides_file=str(path))
    assert why in str(error.value)


def test_retention_and_tiers_of_the_file_apply_to_their_tenant_only(
        tmp_path):
    path = tmp_path / 'overrides'
    path.write_text('arch retention=2w tiers=1h:260w\nbare tiers=\n')
    pm = PlacementMap(overrides_file=str(path), default_retention_hours=48,
                      tiers=(), shard_duration='1d')
    arch = pm.place('arch')
    assert (arch.retention.name, arch.retention.hours,
            arch.retention.shard_duration) == ('2w', 336, '1d')
    assert [t.interval for t in arch.tiers] == ['1h']
    assert pm.place('other').retention.name == '48h'
    assert pm.place('bare').tiers == ()


def test_a_tenant_in_the_config_and_the_file_is_refused_naming_both(
        tmp_path):
    path = tmp_path / 'overrides'
    path.write_text('acme retention=2w\n')
    with pytest.raises(InvalidOption) as error:
        PlacementMap(overrides_file=str(path),
                     retention_overrides={'acme': pm_policy('1w')})
    assert 'retention_overrides' in str(error.value)
    assert 'tenant overrides file' in str(error.value)
    path.write_text('acme tiers=1h:inf\n')
    with pytest.raises(InvalidOption, match='tenant_tiers'):
        PlacementMap(overrides_file=str(path),
                     tenant_tiers={'acme': ()})


def pm_policy(text):
    from monasca_persister_dbpt.placement import parse_duration
    return parse_duration(text)


def test_a_tier_shorter_than_the_raw_policy_is_a_bad_edit(tmp_path, reread,
                                                          caplog):
    path = tmp_path / 'overrides'
    path.write_text('acme retention=2w\n')
    pm = PlacementMap(overrides_file=str(path))
    _changed(path, 'acme retention=8w tiers=1h:4w\n')
    assert pm.place('acme').retention.name == '2w'  # the last good file
    assert 'tier 1h is kept 672h, shorter than the raw policy 1344h' in \
        caplog.text
    _changed(path, 'acme retention=1w\n')
    assert pm.place('acme').retention.name == '1w'


def test_a_changed_retention_makes_the_database_unknown_again(tmp_path,
                                                             reread):
    path = tmp_path / 'overrides'
    path.write_text('acme retention=2w\n')
    pm = PlacementMap(overrides_file=str(path))
    schema = Schema()
    schema._remember(pm.place('acme'))
    schema._remember(pm.place('other'))
    assert schema.known(pm.place('acme'))
    _changed(path, 'acme retention=4w\n')
    assert not schema.known(pm.place('acme'))
    assert schema.known(pm.place('other'))


# -- blocked ------------------------------------------------------------------

def test_a_blocked_tenant_is_refused_and_counted_by_both_drivers(
        conf, tmp_path, reread):
    path = tmp_path / 'overrides'
    path.write_text('other max_series=0\n')
    conf.set_override('tenant_overrides_file', str(path), 'dbpt')
    metrics = MetricsRepository(conf)
    alarms = AlarmStateHistoryRepository(conf)
    now = int(time.time() * 1000)

    def send(repo, rec):
        return repo.process_message(records.Message(records.encode(rec), 0))
    assert send(metrics, records.metric('gone', timestamp=now))[0]
    _changed(path, 'other max_series=0\ngone blocked=true\n')
    for repo in (metrics, alarms):  # as their next flush does
        repo.placements.tenant_overrides.check()
    assert send(metrics, records.metric('gone', timestamp=now + 1)) == \
        (None, None)
    assert send(metrics, records.metric('other', timestamp=now))[0]
    assert send(alarms, records.alarm('gone')) == (None, None)
    assert send(alarms, records.alarm('other'))[0]
    assert metrics.stats.tenant('gone') == {'refused_blocked': 1}
    assert alarms.stats.tenant('gone') == {'refused_blocked': 1}


# -- export files -------------------------------------------------------------

def _archive(path, lines, end=True, points=None):
    with gzip.open(path, 'wt') as out:
        out.write('%s 1 %s\n' % (MAGIC, json.dumps({'tenant': 't'})))
        out.write('# policy {"default": true, "duration": "0s", '
                  '"name": "autogen"}\n# DML\n'
                  '# CONTEXT-RETENTION-POLICY:autogen\n')
        out.write(''.join(line + '\n' for line in lines))
        if end:
            out.write('# end %s\n' % json.dumps({
                'points': len(lines) if points is None else points,
                'counts': []}))


def test_a_whole_export_is_read_back_in_batches(tmp_path):
    path = tmp_path / 'a.gz'
    _archive(path, ['m v=%d 1' % i for i in range(7)])
    archive = Archive(str(path))
    assert archive.tenant_id == 't' and archive.points == 7
    assert [(rp, len(lines)) for rp, lines in archive.sections(batch=3)] \
        == [('autogen', 3), ('autogen', 3), ('autogen', 1)]


def test_a_file_that_is_not_a_whole_export_of_ours_is_refused(tmp_path):
    cut = tmp_path / 'cut.gz'
    _archive(cut, ['m v=1 1'] * 2000)
    data = cut.read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(ArchiveError, match='cannot be read whole'):
        Archive(str(cut))
    no_end = tmp_path / 'no-end.gz'
    _archive(no_end, ['m v=1 1'], end=False)
    with pytest.raises(ArchiveError, match='truncated: it has no end line'):
        Archive(str(no_end))
    short = tmp_path / 'short.gz'
    _archive(short, ['m v=1 1'], points=2)
    with pytest.raises(ArchiveError, match='holds 1 point.* says 2'):
        Archive(str(short))
    plain = tmp_path / 'plain.txt'
    plain.write_text('m v=1 1\n')
    with pytest.raises(ArchiveError, match='cannot be read whole'):
        Archive(str(plain))
    other = tmp_path / 'other.gz'
    with gzip.open(other, 'wt') as out:
        out.write('# DML\nm v=1 1\n')
    with pytest.raises(ArchiveError, match='not an export of monasca'):
        Archive(str(other))


# -- the command line ---------------------------------------------------------

def test_an_empty_project_list_is_never_taken_for_all_orphans():
    with pytest.raises(ValueError, match='holds no project id'):
        read_projects(['\n', '# none\n'], 'ids.txt')
    assert read_projects(['a\n', ' b # x\n', '\n'], 'ids.txt') == {'a', 'b'}


def test_refusals_are_read_from_prometheus_text_or_the_stats_file(tmp_path):
    prom = tmp_path / 'prom'
    prom.mkdir()
    for pid in (1, 2):
        stats = Stats(interval=0)
        stats.add('a', 'refused_rate', 3)
        stats.add('a', 'dropped_field_type', 5)
        registry = CollectorRegistry()
        registry.register(_Counters(stats))
        (prom / ('monasca_persister_dbpt_%d.prom' % pid)).write_bytes(
            generate_latest(registry).replace(b'pid="', b'pid="%d' % pid))
    assert read_refusals(str(prom)) == {'a': {'rate': 6}}
    assert read_refusals(str(prom / 'monasca_persister_dbpt_1.prom')) == \
        {'a': {'rate': 3}}
    stats = tmp_path / 'stats.json'
    stats.write_text(json.dumps({'tenants': {'a': {'refused_series': 2,
                                                   'points_written': 9}}}))
    assert read_refusals(str(stats)) == {'a': {'series': 2}}


@pytest.mark.parametrize('argv, why', [
    (['show', 'a/b'], "tenant id 'a/b' contains '/'"),
    (['export', 't', '--out', '/tmp/x.gz', '--start', 'yesterday'],
     "--start 'yesterday' is not an ISO 8601"),
    (['drop', 't', '--yes'], 'tenant_overrides_file is not set'),
    (['drop', 't', '--settle-seconds', '-1', '--no-block'],
     '--settle-seconds -1: must be 0 or more'),
    (['orphans', '--projects', '/nonexistent/ids'], '--projects '
     '/nonexistent/ids'),
])
def test_bad_command_lines_exit_2_naming_what_was_wrong(tmp_path, capsys,
                                                        argv, why):
    config = tmp_path / 'persister.conf'
    # A port nothing listens on: none of these may reach a server.
    config.write_text('[influxdb]\nip_address = 127.0.0.1\nport = 9\n')
    assert cli.main(['--config-file', str(config)] + argv) == 2
    assert why in capsys.readouterr().err


def test_a_missing_config_file_exits_2_naming_it(capsys):
    assert cli.main(['--config-file', '/nonexistent.conf', 'list']) == 2
    assert '/nonexistent.conf: no such file' in capsys.readouterr().err


def test_workers_replacing_a_changed_tier_query_at_once_refuse_nothing(
        tmp_path):
    """Every worker reconciles a tenant whose tiers changed; when another
    worker dropped (or created) the continuous query in between, that is
    not a refusal of the tenant's database."""
    path = tmp_path / 'overrides'
    path.write_text('acme tiers=1h:inf\n')
    pm = PlacementMap(overrides_file=str(path))
    placement = pm.place('acme')
    answers = {'SHOW DATABASES': {'series': [{'values': [['mon_acme']]}]}}

    def query(statements):
        out = []
        for statement in statements.split(';'):
            if statement.startswith('CREATE CONTINUOUS QUERY'):
                # Differs from ours; by the time we create ours, another
                # worker has.
                out.append({'error': 'continuous query already exists'})
            elif statement.startswith('DROP CONTINUOUS QUERY'):
                out.append({'error': 'continuous query not found'})
            else:
                out.append(answers.get(statement, {}))
        return out
    schema = Schema()
    assert schema.ensure([placement], query) == {}
    assert schema.known(placement)


def test_points_buffered_before_a_block_are_refused_when_due(tmp_path,
                                                             reread):
    """Coalesced (or held) before the block, written after it: refused
    and their records committed, so a drop is not undone by them."""
    from tests.unit.test_replicas import Writer, _buffers
    path = tmp_path / 'overrides'
    path.write_text('kept max_series=0\n')
    placements = PlacementMap(overrides_file=str(path))
    writer = Writer()
    buffers = _buffers(writer, placements, coalesce_points=100,
                       max_delay=60.0)
    tickets = [buffers.add(t, 'm v=1 %d' % n)
               for n, t in enumerate(['gone', 'kept'] * 3)]
    _changed(path, 'kept max_series=0\ngone blocked=true\n')
    placements.tenant_overrides.check()
    buffers.flush(everything=True)
    assert all(t.done for t in tickets)
    assert sorted(line for _, line in writer.written) == [
        'm v=1 1', 'm v=1 3', 'm v=1 5']
    assert buffers._stats.tenant('gone') == {'refused_blocked': 3}
