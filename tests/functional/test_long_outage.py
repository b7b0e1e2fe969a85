"""A server down for minutes costs the other tenants nothing and loses
nothing: the real monasca-persister 9.0.0 under a supervisor that restarts
it (as systemd's Restart=always), two influxd, the second down for more
than three minutes while records flow for tenants on both, faster than
the default held_points_max allows, and a SIGKILL in the middle."""

import glob
import json
import threading
import time
import uuid

from tests import records
from tests import servers

UP = ['up-1', 'up-2']
DOWN = 'down-1'
#: The down tenant gets three records in five.
ROTATION = UP + [DOWN] * 3
OUTAGE = 185.0           # seconds the second server is kept down, at least
HELD_MAX = 200000        # the default [dbpt] held_points_max


class Supervisor:
    """Restarts the persister whenever it exits, counting the exits it did
    not ask for."""

    def __init__(self, start):
        self._start = start
        self.proc = start()
        self.exits = []
        self._killing = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self):
        while not self._stop.is_set():
            if not self.proc.alive():
                if not self._killing:
                    self.exits.append(self.proc.proc.returncode)
                self._killing = False
                self.proc = self._start()
            time.sleep(0.2)

    def kill(self):
        self._killing = True
        self.proc.kill()

    def stop(self):
        self._stop.set()
        self._thread.join()
        self.proc.stop()


def _count(server, tenant):
    db = 'mon_' + tenant
    if db not in server.databases():
        return 0
    rows = server.rows('SELECT count(value) FROM "cpu.idle_perc"', db)
    return rows[0]['count'] if rows else 0


def _stat(path_glob, name):
    """The largest value of a gauge over every worker's stats file."""
    found = 0
    for path in glob.glob(path_glob):
        try:
            with open(path) as handle:
                value = json.load(handle)['gauges'].get(name, 0)
        except (OSError, ValueError):
            continue
        if isinstance(value, (int, float)):
            found = max(found, value)
    return found


def test_a_server_down_for_minutes_costs_the_others_nothing_and_loses_nothing(
        influx, broker, tmp_path):
    suffix = uuid.uuid4().hex[:8]
    topic, alarms = 'metrics_' + suffix, 'alarms_' + suffix
    broker.create_topic(topic)
    broker.create_topic(alarms)
    second = servers.InfluxServer(str(tmp_path / 'second')).start()
    second.stop()
    overrides = tmp_path / 'overrides'
    overrides.write_text('%s two\n' % DOWN)
    prom = tmp_path / 'prom'
    extra = ('servers = two:%s\ntenant_overrides_file = %s\nhold_after = 2\n'
             'retry_timeout = 10\nmax_delay = 1\nprometheus_textfile_dir = %s'
             '\nprometheus_interval = 1' % (second.url, overrides, prom))
    runs = []

    def start():
        proc = servers.Persister(
            influx, broker, str(tmp_path / ('p%d' % len(runs))),
            metrics_topic=topic, alarms_topic=alarms, group='g' + suffix,
            batch_size=1000, extra=extra,
            spill_dir=str(tmp_path / 'spill')).start()
        runs.append(proc)
        return proc
    started = time.time() * 1000
    supervisor = Supervisor(start)
    lag_seen = []
    try:
        with records.Feeder(broker, topic, ROTATION, lambda tenant, i:
                            records.metric(tenant, timestamp=started + i,
                                           value=i),
                            per_tick=50, pause=0.02) as feeder:
            down_since = time.monotonic()
            killed = False
            while time.monotonic() - down_since < OUTAGE or \
                    feeder.sent[DOWN] <= HELD_MAX:
                time.sleep(5)
                lag_seen.append(_stat(str(tmp_path / 'p*' / 'stats.json.*'),
                                      'watermark_lag'))
                if not killed and feeder.sent[DOWN] > HELD_MAX // 2:
                    supervisor.kill()   # mid-outage: loses nothing
                    killed = True
            assert killed
            text = '\n'.join(open(p).read() for p in
                             glob.glob(str(prom / '*.prom')))
            assert 'server_up{pid=' in text and \
                'server="%s"} 0.0' % second.url in text, text[-2000:]
            assert 'points_waiting' in text
        expected = dict(feeder.sent)

        def up_complete():
            return all(_count(influx, t) == expected[t] for t in UP)
        # With the second server still down, the first one's tenants hold
        # every record sent to them.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not up_complete():
            time.sleep(1)
        assert up_complete(), ({t: _count(influx, t) for t in UP}, expected,
                               supervisor.proc.logtext()[-3000:])
        second.start()

        def complete():
            return all(_count(influx, t) == expected[t] for t in UP) and \
                _count(second, DOWN) == expected[DOWN]
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not complete():
            time.sleep(2)
        got = {t: _count(influx, t) for t in UP}
        got[DOWN] = _count(second, DOWN)
        log = supervisor.proc.logtext()[-3000:]
        assert got == expected, log
        assert expected[DOWN] > HELD_MAX
        # Nothing but our own SIGKILL ended it.
        assert supervisor.exits == [], (supervisor.exits, log)
        # Commits never waited for the down server: what was read but not
        # yet committable stayed a few seconds' worth, while more than
        # HELD_MAX records for it went by.
        assert max(lag_seen) < HELD_MAX // 4, lag_seen
        assert 'mon_' + DOWN not in influx.databases()
        # The spill is gone once written.
        assert not glob.glob(str(tmp_path / 'spill' / '*' / '*.spill'))
    finally:
        supervisor.stop()
        second.close()
        for proc in runs:
            proc.stop()
