"""The devstack plugin's phases under bash, devstack's functions stubbed."""

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

STUBS = r'''
function _ini { "$PYTHON" - "$@" <<'PY'
import configparser, sys
op, path, section, key = sys.argv[1:5]
cp = configparser.RawConfigParser(); cp.optionxform = str; cp.read(path)
if op == 'set':
    if not cp.has_section(section): cp.add_section(section)
    cp.set(section, key, sys.argv[5])
elif cp.has_section(section):
    cp.remove_option(section, key)
with open(path, 'w') as f: cp.write(f)
PY
}
function iniset { _ini set "$@"; }
function inidelete { _ini del "$@"; }
function setup_develop { echo "setup_develop $*" >> "$CALLS"; }
function pip_uninstall { echo "pip_uninstall $*" >> "$CALLS"; }
function sudo {
    echo "sudo $*" >> "$CALLS"
    case "$1" in
        tee|rm|test) "$@" ;;  # in the test's own folders
        systemctl) [[ "$2" != cat || -n "$UNIT_EXISTS" ]] ;;
    esac
}
function die { echo "die $*" >> "$CALLS"; exit 1; }
function echo_summary { :; }
function define_plugin { :; }
function plugin_requires { :; }
'''


def run_phase(tmp_path, *phase, **env):
    script = STUBS + '\nsource %s/devstack/settings\nsource %s/devstack/plugin.sh %s\n' % (
        ROOT, ROOT, ' '.join(phase))
    full_env = {'PATH': '/usr/bin:/bin', 'PYTHON': sys.executable,
                'DEST': str(tmp_path), 'CALLS': str(tmp_path / 'calls'),
                'MONASCA_PERSISTER_CONF': str(tmp_path / 'persister.conf'),
                'MONASCA_API_CONF': str(tmp_path / 'api.conf'),
                'MONASCA_PERSISTER_DBPT_SYSTEMD_DIR': str(tmp_path / 'systemd')}
    full_env.update(env)
    return subprocess.run(['bash', '-c', script], check=True,
                          env=full_env, capture_output=True, text=True)


def read(path):
    cp = configparser.RawConfigParser()
    cp.optionxform = str
    cp.read(path)
    return cp


@pytest.fixture
def confs(tmp_path):
    (tmp_path / 'persister.conf').write_text(
        '[influxdb]\ndatabase_name = mon\nip_address = 127.0.0.1\n'
        '[repositories]\nmetrics_driver = x:Y\n')
    (tmp_path / 'api.conf').write_text('[influxdb]\ndatabase_name = mon\n')
    return tmp_path


def test_install_phase_installs_the_package(confs):
    run_phase(confs, 'stack', 'install')
    assert 'setup_develop %s/monasca-persister-dbpt' % confs in \
        (confs / 'calls').read_text()


def test_post_config_switches_persister_and_api_to_db_per_tenant(confs):
    run_phase(confs, 'stack', 'post-config',
              MONASCA_PERSISTER_DBPT_RETENTION_HOURS='72',
              MONASCA_PERSISTER_DBPT_RETENTION_OVERRIDES='p1:2w,p2:1d',
              MONASCA_PERSISTER_DBPT_RETENTION_TIERS='5m:4w,1h:260w')
    persister = read(confs / 'persister.conf')
    assert persister['repositories']['metrics_driver'] == \
        'monasca_persister_dbpt.repositories.metrics:MetricsRepository'
    assert persister['repositories']['alarm_state_history_driver'].endswith(
        ':AlarmStateHistoryRepository')
    assert persister['influxdb']['db_per_tenant'] == 'True'
    assert persister['influxdb']['default_retention_hours'] == '72'
    assert persister['influxdb']['database_name'] == 'mon'  # kept
    assert persister['dbpt']['retention_overrides'] == 'p1:2w,p2:1d'
    assert persister['dbpt']['retention_tiers'] == '5m:4w,1h:260w'
    assert persister['dbpt']['commit_guard'] == 'True'
    assert read(confs / 'api.conf')['influxdb']['db_per_tenant'] == 'True'


def test_several_servers_switch_monasca_api_to_the_read_driver(confs):
    run_phase(confs, 'stack', 'post-config',
              MONASCA_PERSISTER_DBPT_SERVERS='influx2:http://10.0.0.2:8086',
              MONASCA_PERSISTER_DBPT_HASH_SERVERS='default,influx2',
              MONASCA_PERSISTER_DBPT_TEMPLATE='t_{tenant_id}')
    api = read(confs / 'api.conf')
    persister = read(confs / 'persister.conf')
    assert api['repositories']['metrics_driver'] == \
        'monasca_persister_dbpt.api.metrics_repository:MetricsRepository'
    for option, value in (('servers', 'influx2:http://10.0.0.2:8086'),
                          ('hash_servers', 'default,influx2'),
                          ('database_template', 't_{tenant_id}')):
        assert api['dbpt'][option] == persister['dbpt'][option] == value


def test_one_server_keeps_monasca_apis_own_driver(confs):
    run_phase(confs, 'stack', 'post-config')
    assert not read(confs / 'api.conf').has_section('repositories')


def test_the_spill_folder_is_made_for_the_persister_and_named(confs):
    run_phase(confs, 'stack', 'post-config', STACK_USER='stack',
              MONASCA_PERSISTER_DBPT_SPILL_DIR='/srv/spill')
    assert read(confs / 'persister.conf')['dbpt']['spill_dir'] == '/srv/spill'
    assert 'sudo install -d -o stack -m 0700 /srv/spill' in \
        (confs / 'calls').read_text()


def test_unstack_and_clean_leave_nothing_of_ours(confs):
    run_phase(confs, 'stack', 'post-config',
              MONASCA_PERSISTER_DBPT_RETENTION_OVERRIDES='p1:2w',
              MONASCA_PERSISTER_DBPT_SERVERS='influx2:http://10.0.0.2:8086')
    run_phase(confs, 'clean')
    persister = read(confs / 'persister.conf')
    assert 'dbpt' not in persister['repositories']['metrics_driver']
    assert 'db_per_tenant' not in persister['influxdb']
    assert not persister.has_section('dbpt') or not dict(persister['dbpt'])
    api = read(confs / 'api.conf')
    assert 'db_per_tenant' not in api['influxdb']
    assert not api.has_section('dbpt') or not dict(api['dbpt'])
    assert 'dbpt' not in api['repositories']['metrics_driver']
    assert 'pip_uninstall monasca-persister-dbpt' in (confs / 'calls').read_text()


def test_post_config_raises_influxds_open_files_with_a_drop_in(confs):
    dropin = confs / 'systemd/influxdb.service.d/monasca-persister-dbpt.conf'
    dropin.parent.mkdir(parents=True)
    run_phase(confs, 'stack', 'post-config', UNIT_EXISTS='1',
              MONASCA_PERSISTER_DBPT_INFLUXDB_NOFILE='200000')
    assert dropin.read_text() == '[Service]\nLimitNOFILE=200000\n'
    calls = (confs / 'calls').read_text()
    assert calls.index('sudo systemctl daemon-reload') < \
        calls.index('sudo systemctl restart influxdb.service')
    run_phase(confs, 'clean')
    assert not dropin.exists()


def test_without_an_influxdb_unit_the_limit_is_left_and_said(confs):
    out = run_phase(confs, 'stack', 'post-config').stdout
    assert 'no systemd unit influxdb.service here' in out
    assert 'restart' not in (confs / 'calls').read_text()


def test_a_bad_open_files_value_stops_the_stack_naming_it(confs):
    with pytest.raises(subprocess.CalledProcessError):
        run_phase(confs, 'stack', 'post-config', UNIT_EXISTS='1',
                  MONASCA_PERSISTER_DBPT_INFLUXDB_NOFILE='lots')
    assert 'MONASCA_PERSISTER_DBPT_INFLUXDB_NOFILE must be a number' in \
        (confs / 'calls').read_text()


@pytest.mark.skipif(not shutil.which('shellcheck'),
                    reason='shellcheck not installed (tools/setup.sh does)')
def test_scripts_pass_shellcheck():
    subprocess.run(['shellcheck', '-s', 'bash', 'devstack/plugin.sh',
                    'devstack/settings', 'tools/setup.sh', '.ci/run'],
                   cwd=ROOT, check=True)
