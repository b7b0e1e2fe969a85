"""A migration that exits 0 has left nothing behind in its range.

Each test runs the console script as an operator does, against a real
influxd, and proves completeness by counting, not by the tool's word.
"""

import fcntl
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.functional.test_migration import count, migrate, seed, snapshot

DAY_MS = 86400 * 1000


def _points(influx, db, measurement):
    return count(influx, db, measurement)


def test_a_run_with_a_start_offset_hides_nothing_from_the_next_run(
        influx, persister_conf, tmp_path):
    seed(influx, weeks=2, future=False)
    migrate(persister_conf, '--migrate-time-unit', 'd',
            '--migrate-start-time-offset', '5', '--migrate-end-time-offset',
            '30', cwd=tmp_path, check=0)
    assert _points(influx, 'mon_ops', 'disk used') < 28
    out = migrate(persister_conf, '--migrate-time-unit', 'd',
                  '--migrate-start-time-offset', '0',
                  '--migrate-end-time-offset', '30', cwd=tmp_path,
                  check=0).stdout
    assert 'MISMATCH' not in out
    assert _points(influx, 'mon_ops', 'disk used') == 28


def test_a_late_point_is_copied_by_the_delta_run(influx, persister_conf,
                                                 tmp_path):
    seed(influx, weeks=1, future=False)
    start_ms = int(time.time() * 1000)
    migrate(persister_conf, cwd=tmp_path, check=0)
    # Stamped before the first run's plan time, arriving after it (Kafka
    # or flush lag): the unit it falls in was already copied.
    influx.write('mon', ['disk\\ used,_region=r1,_tenant_id=ops,host=late '
                         'value=1,value_meta="{}" %d' % (start_ms - 25000)])
    out = migrate(persister_conf, cwd=tmp_path, check=0).stdout
    assert ' 1 chunk(s)' in out, out
    assert count(influx, 'mon_ops', 'disk used', "WHERE host = 'late'") == 1


def test_a_checkpoint_of_another_source_is_refused(influx, persister_conf,
                                                   tmp_path):
    from tests import servers
    seed(influx, weeks=1, future=False)
    migrate(persister_conf, cwd=tmp_path, check=0)
    second = servers.InfluxServer(str(tmp_path / 'second')).start()
    try:
        seed(second, weeks=1, future=False)
        other = tmp_path / 'other.conf'
        other.write_text(open(persister_conf).read().replace(
            'port = %d' % influx.port, 'port = %d' % second.port))
        proc = migrate(str(other), cwd=tmp_path, check=2)
        assert 'belongs to another migration' in proc.stderr
        assert 'server=%s' % influx.url in proc.stderr
        assert 'Traceback' not in proc.stderr
        assert second.databases() == {'mon'}
        # Its own checkpoint: every point copied.
        migrate(str(other), '--checkpoint', str(tmp_path / 'two.jsonl'),
                cwd=tmp_path, check=0)
        assert _points(second, 'mon_ops', 'disk used') == 14
    finally:
        second.close()


def test_two_runs_cannot_share_a_checkpoint(influx, persister_conf, tmp_path):
    seed(influx, weeks=1, future=False)
    with open(tmp_path / 'migrate-checkpoint.jsonl.lock', 'a+') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.write('4242\n')
        lock.flush()
        proc = migrate(persister_conf, cwd=tmp_path, check=2)
    assert 'in use by another migration (pid 4242)' in proc.stderr
    assert influx.databases() == {'mon'}


def test_ctrl_c_stops_promptly_and_the_same_command_resumes(
        influx, persister_conf, tmp_path):
    seed(influx, weeks=3)
    before = snapshot(influx)
    exe = os.path.join(os.path.dirname(sys.executable),
                       'monasca-persister-dbpt-migrate')
    args = [exe, '--config-file', persister_conf, '--chunk-points', '1',
            '--migrate-time-unit', 'h', '--workers', '1']
    checkpoint = tmp_path / 'migrate-checkpoint.jsonl'
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (
            not checkpoint.exists() or
            len(checkpoint.read_text().splitlines()) < 10):
        time.sleep(0.01)
    # Freeze influxd: the run cannot finish before Ctrl-C reaches it, and
    # a statement is in flight (hundreds of chunks are left).
    os.kill(influx.proc.pid, signal.SIGSTOP)
    try:
        assert proc.poll() is None, 'the run ended before Ctrl-C'
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        os.kill(influx.proc.pid, signal.SIGCONT)
    assert proc.returncode == 130, err
    assert 'run the same command again' in err and 'Traceback' not in err
    out = migrate(persister_conf, '--chunk-points', '1',
                  '--migrate-time-unit', 'h', cwd=tmp_path, check=0).stdout
    assert 'MISMATCH' not in out
    assert snapshot(influx) == before


@pytest.mark.parametrize('setup, args, words', [
    ('missing-config', [], 'nope.conf'),
    ('no-influxdb', ['--dry-run'], 'does not answer'),
    ('', ['--migrate-end-time-offset', '20000'], 'before 1677'),
    ('binary-checkpoint', [], 'not UTF-8'),
    ('dir-checkpoint', [], 'is a directory'),
    ('', ['--migrate-retention-policy', ':2w'], 'has no project'),
    ('', ['--migrate-retention-policy', "o'k:2w"], "tenant id \"o'k\""),
    ('', ['--migrate-retention-policy', 'a:1d,a:2d'], 'given twice'),
    ('', ['--migrate-skip-regex', 'a{1,3},(x'], "'(x'"),
])
def test_operator_mistakes_get_one_clear_line_and_no_traceback(
        influx, persister_conf, tmp_path, setup, args, words):
    seed(influx, weeks=1, future=False)
    conf = persister_conf
    if setup == 'missing-config':
        conf = str(tmp_path / 'nope.conf')
    elif setup == 'no-influxdb':
        conf = str(tmp_path / 'bare.conf')
        with open(conf, 'w') as handle:
            handle.write('[DEFAULT]\nlog_file = %s\n[influxdb]\nport = 1\n'
                         % (tmp_path / 'log'))
    elif setup == 'binary-checkpoint':
        (tmp_path / 'migrate-checkpoint.jsonl').write_bytes(b'\xff\xfe\x00')
    elif setup == 'dir-checkpoint':
        (tmp_path / 'migrate-checkpoint.jsonl').mkdir()
    start = time.monotonic()
    exe = os.path.join(os.path.dirname(sys.executable),
                       'monasca-persister-dbpt-migrate')
    proc = subprocess.run([exe, '--config-file', conf, *args],
                          capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode in (1, 2), proc.stdout + proc.stderr
    assert words in proc.stderr, proc.stderr
    assert 'Traceback' not in proc.stderr + proc.stdout
    if setup == 'no-influxdb':
        assert 'http://127.0.0.1:1' in proc.stderr
        assert time.monotonic() - start < 30
    assert influx.databases() == {'mon'}


def test_a_skip_regex_with_a_comma_still_skips(influx, persister_conf,
                                              tmp_path):
    seed(influx, weeks=1, future=False)
    influx.write('mon', ['aaa,_tenant_id=ops v=1 %d' % (
        int(time.time() * 1000) - 1000)])
    migrate(persister_conf, '--migrate-skip-regex', 'a{1,3}$',
            '--migrate-skip-regex', '^log\\..+', cwd=tmp_path, check=0)
    assert count(influx, 'mon_ops', 'aaa') == 0
    assert count(influx, 'mon_ops', 'log.api') == 0
    assert count(influx, 'mon_ops', 'disk used') == 14


def test_tier_backfill_at_the_retention_edge_is_no_failure(
        influx, persister_conf, tmp_path):
    seed(influx, weeks=1, future=False)
    with open(persister_conf, 'a') as handle:
        handle.write('retention_tiers = 1h:1d\n')
    out = migrate(persister_conf, cwd=tmp_path, check=0).stdout
    assert '0 chunks failed' in out
    out = migrate(persister_conf, cwd=tmp_path, check=0).stdout
    assert ' 0 chunk(s)' in out


def test_field_types_are_kept_when_measurements_share_a_field_name(
        influx, persister_conf, tmp_path):
    influx.query('CREATE DATABASE mon')
    now = int(time.time() * 1000) - 60000
    lines = []
    for i in range(20):
        ts = now - i * 1000
        lines += ['cpu.idle_perc,_tenant_id=a value=%d.5 %d' % (i, ts),
                  'custom.int,_tenant_id=a value=%di %d' % (i, ts),
                  'custom.str,_tenant_id=a value="s%d" %d' % (i, ts),
                  'custom.bool,_tenant_id=a value=true %d' % ts]
    influx.write('mon', lines)
    out = migrate(persister_conf, cwd=tmp_path, check=0).stdout
    assert 'MISMATCH' not in out
    types = {(r['_measurement'], r['fieldType']) for r in influx.rows(
        'SHOW FIELD KEYS', 'mon_a')}
    assert types == {('cpu.idle_perc', 'float'), ('custom.int', 'integer'),
                     ('custom.str', 'string'), ('custom.bool', 'boolean')}
    for m in ('cpu.idle_perc', 'custom.int', 'custom.str', 'custom.bool'):
        assert count(influx, 'mon_a', m) == 20, m
