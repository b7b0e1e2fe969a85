import subprocess
import sys
from pathlib import Path

from monasca_persister_dbpt import conf

ROOT = Path(__file__).resolve().parents[2]


def test_list_opts_gives_our_group_only():
    groups = [group.name for group, _ in conf.list_opts()]
    assert groups == ['dbpt']


def test_entry_point_for_oslo_config_generator_is_registered():
    from importlib.metadata import entry_points
    names = [ep.name for ep in entry_points(group='oslo.config.opts')]
    assert 'monasca_persister_dbpt' in names


def test_repository_drivers_load_through_stevedore():
    from stevedore import driver
    for name in ('metrics', 'alarm_state_history'):
        mgr = driver.DriverManager('monasca_persister_dbpt.repositories',
                                   name, invoke_on_load=False)
        assert mgr.driver.__name__.endswith('Repository')


def test_sample_config_is_current(tmp_path):
    out = tmp_path / 'sample.conf'
    subprocess.run([sys.executable, '-m', 'oslo_config.generator',
                    '--namespace', 'monasca_persister_dbpt',
                    '--wrap-width', '79', '--output-file', str(out)],
                   check=True)
    committed = ROOT / 'etc' / 'monasca-persister-dbpt.conf.sample'
    assert out.read_text() == committed.read_text(), \
        'run: tox -e genconfig'


def test_migration_runs_as_python_dash_m_with_the_seed_flags():
    out = subprocess.run(
        [sys.executable, '-m', 'monasca_persister_dbpt.migrate', '--help'],
        capture_output=True, text=True, check=True).stdout
    for flag in ('--config-file', '--migrate-retention-policy',
                 '--migrate-skip-regex', '--migrate-time-unit',
                 '--migrate-start-time-offset', '--migrate-end-time-offset'):
        assert flag in out
