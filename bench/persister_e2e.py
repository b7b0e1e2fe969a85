"""The real persister end to end: coalescing vs not vs upstream, by tenants.

For each tenant count, three runs on the same records, alternating, each
on a fresh influxd and a fresh topic: monasca-persister 9.0.0 with our
drivers and coalescing (the default), with ``[dbpt] max_delay = 0`` (no
coalescing), and with upstream's own driver. Every run first writes one
point per tenant and waits for as many points written, then times the
records to the last point written. Without ``--produce-first`` the warm
points are all there is in Kafka at first, so every tenant database
exists before the clock starts; with it, the warm records are only the
first in the topic, and the first points of most tenants (each creates
its database's files in influxd: several milliseconds of influxd's CPU a
database) fall in the timed run. Host defaults: batch 20,000, one worker.

Prints records/s (from the start to the last point written), the steady
records/s (while the backlog is worked off: from 10% of the records, and
not before every tenant database holds its first shard, to 90% of them,
or to before the last ``buffered_points_max``; counted as records handed
to the driver for upstream and the no-op, as points written for ours),
points per write request, worker RSS, and the ceiling: the same points
POSTed straight to /write at the same points per request over as many
connections as the run's writers (``write_concurrency``), into new
databases made and given their first point before the clock starts, once
influxd is quiet after the run. When the databases were still being
created after 10% of the records, it says when the last got its first
shard.

    .venv/bin/python bench/persister_e2e.py
    .venv/bin/python bench/persister_e2e.py --tenants 10,1000 --records 200000
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import sys
import time
import uuid

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.scratch import scratch_dir  # noqa: E402
from bench.soak import descendants, rss_kib, snapshots, totals  # noqa: E402
from bench.soak import written  # noqa: E402
from bench.write_path import cpu_seconds  # noqa: E402
from tests import records  # noqa: E402
from tests import servers  # noqa: E402

VARIANTS = ('coalescing', 'no coalescing', 'upstream')
#: Also measurable (--variants): our drivers with [dbpt] consume_batch,
#: and a driver that stores nothing (bench/noop_driver.py: the host
#: loop's own ceiling), unpatched and with the batched consumer.
MORE_VARIANTS = ('batched', 'noop', 'noop batched')
NOOP = 'bench.noop_driver:NoopRepository'
#: consume_batch of the 'batched' variants (--consume-batch): ten times
#: the 1,000 tenants of the many-tenant runs, so that a batch brings each
#: tenant several records (see the benchmarks page).
CONSUME_BATCH = 10000


def produce(broker, topic, payloads):
    producer = broker.producer()
    for payload in payloads:
        while True:
            try:
                producer.produce(topic, payload)
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(120)


def processed(log_path):
    try:
        with open(log_path, errors='replace') as handle:
            return sum(int(n) for n in re.findall(
                r'Processed (\d+) messages', handle.read()))
    except OSError:
        return 0


def run(variant, tenants, payloads, warm, work, batch, watch=None,
        produce_first=False, extra='', workers=1,
        consume_batch=CONSUME_BATCH):
    """One variant; *watch(persister, influx)*, if given, is called when
    the timed records are produced and returns a callable called when they
    are written (bench/profile_e2e.py profiles with it)."""
    influx = servers.InfluxServer(os.path.join(work, 'influxd-' +
                                               uuid.uuid4().hex[:6])).start()
    broker = servers.KafkaBroker(os.path.join(work, 'tansu-' +
                                              uuid.uuid4().hex[:6])).start()
    started = []
    try:
        broker.create_topic('metrics')
        broker.create_topic('alarm-state-transitions')
        # --produce-first: every record is in Kafka before the persister
        # starts (the warm ones first), so a consumer faster than the
        # producer is not timed against the producer.
        produce(broker, 'metrics', warm + payloads if produce_first else warm)
        settings = dict(batch_size=batch, max_wait=5, stats_interval=1,
                        extra='', num_processors=workers)
        counted_by_host = variant == 'upstream' or variant.startswith('noop')
        if variant == 'upstream':
            settings['metrics_driver'] = servers.UPSTREAM_METRICS
        elif variant == 'no coalescing':
            settings['extra'] = 'max_delay = 0'
        elif variant == 'batched':
            settings['extra'] = 'consume_batch = %d' % consume_batch
        elif variant.startswith('noop'):
            settings['metrics_driver'] = NOOP
            os.environ['DBPT_BENCH_CONSUME_BATCH'] = str(
                consume_batch if variant == 'noop batched' else 0)
        if extra and not counted_by_host:
            settings['extra'] += '\n' + extra
        path = os.environ.get('PYTHONPATH')
        if variant.startswith('noop'):
            # The no-op driver is found here; for this persister alone
            # (PYTHONPATH may name the code the other variants run).
            os.environ['PYTHONPATH'] = ROOT
        try:
            persister = servers.Persister(influx, broker, os.path.join(
                work, 'p-' + uuid.uuid4().hex[:6]), **settings).start()
        finally:
            if path is None:
                os.environ.pop('PYTHONPATH', None)
            else:
                os.environ['PYTHONPATH'] = path
        started.append(persister)
        stats = os.path.join(persister.dir, 'stats.json.*')

        def count():
            # Records handed to the driver (the host's "Processed N
            # messages" lines) for the host's drivers; points written for
            # ours (which may hold up to buffered_points_max unwritten).
            if counted_by_host:
                return processed(persister.log)
            return written(stats)

        def done(n):
            return count() >= n
        progress = []  # (time, count), from the persister's start
        deadline = time.monotonic() + 600
        while not done(len(warm)) and time.monotonic() < deadline:
            progress.append((time.monotonic(), count()))
            time.sleep(0.05 if produce_first else 0.2)
        if not produce_first:
            produce(broker, 'metrics', payloads)
        start = time.monotonic()
        waited = []  # (time, the driver's waits so far)
        done_watching = watch(persister, influx) if watch else None
        peak = 0
        ready = None  # (time, count) when every database had a shard
        used = []  # (time, CPU seconds by process so far)
        if not produce_first:
            progress = []  # the records come now
        while not done(len(warm) + len(payloads)):
            if time.monotonic() > deadline or not persister.alive():
                raise RuntimeError('%s: not done: %s' % (
                    variant, persister.logtext()[-1500:]))
            peak = max(peak, sum(rss_kib(p) for p in
                                 descendants(persister.proc.pid)))
            progress.append((time.monotonic(), count()))
            used.append((progress[-1][0], cpu_used(influx, broker,
                                                   persister)))
            if not counted_by_host:
                waited.append((time.monotonic(), waits(stats)))
            if ready is None and (variant.startswith('noop') or
                                  databases_filled(influx) >= len(tenants)):
                ready = progress[-1]
            time.sleep(0.1)
        took = time.monotonic() - start
        high = steady_end(len(payloads), extra)
        low = 0.1
        if ready is not None and ready[1] - len(warm) > low * len(payloads):
            low = (ready[1] - len(warm)) / len(payloads)
            print('  %s: every tenant database had its first shard %.1f s '
                  'into the run, at %.0f%% of the records: the steady '
                  'window starts there' % (variant, ready[0] - start,
                                            100 * low), flush=True)
        steady = steady_rate([(t, c - len(warm)) for t, c in progress],
                             len(payloads), low=low, high=high)
        window = steady_window([(t, c - len(warm)) for t, c in progress],
                               len(payloads), low=low, high=high)
        cpu = None
        if window is not None:
            cpu = cpu_in(used, window, len(payloads) * (high - low))
        if done_watching is not None:
            done_watching(took)
        per_request = None
        if variant.startswith('noop'):
            return len(payloads) / took, None, peak / 1024, None, steady
        if variant != 'upstream':
            time.sleep(1.5)  # one more stats report
            summed = totals(stats)
            if window is not None:
                first = [w for t, w in waited if t >= window[0]][:1]
                last = [w for t, w in waited if t >= window[1]][:1]
                if first and last:
                    print('  %s: in the steady %.1f s the host thread '
                          'waited %s' % (
                              variant, window[1] - window[0], ', '.join(
                                  '%.1f %s' % (
                                      last[0][k] - first[0].get(k, 0.0),
                                      k.replace('_wait_seconds', ' s'))
                                  for k in sorted(last[0])) or 'never'),
                          flush=True)
            if summed.get('write_requests'):
                per_request = (summed['points_written'] - len(warm)) / max(
                    summed['write_requests'] - len(tenants), 1)
        else:
            # One request per tenant per host flush.
            per_request = min(batch, len(payloads)) / min(len(tenants), batch)
        persister.stop()
        lines = payloads_lines(payloads)
        ceiling, ceiling_cpu = post_ceiling(
            influx, tenants, lines, max(1, int(round(per_request))),
            connections(extra))
        if cpu is not None:
            report_cpu(variant, cpu, steady, ceiling,
                       ceiling_cpu / len(payloads))
        return len(payloads) / took, per_request, peak / 1024, ceiling, \
            steady

    finally:
        for persister in started:  # also when a run fails: no orphans
            persister.stop()
        broker.close()
        influx.close()


def waits(stats_glob) -> dict:
    """Seconds our metrics drivers' host threads waited, by cause: for
    records (kafka), for room in their buffers; summed over the workers
    that wrote points (the metrics workers: the alarms workers wait for
    records all the time and write none here)."""
    out: dict = {}
    for snap in snapshots(stats_glob):
        if not snap.get('totals', {}).get('points_written'):
            continue
        for key, value in snap.get('gauges', {}).items():
            if key in ('kafka_wait_seconds', 'room_wait_seconds',
                       'kafka_waits'):
                out[key] = out.get(key, 0) + value
    return out


def cpu_used(influx, broker, persister) -> dict:
    """CPU seconds so far of influxd, the broker, the persister (its
    parent and workers) and this process (which only watches)."""
    out = {'bench': time.process_time()}
    for name, pids in (('influxd', [influx.proc.pid]),
                       ('broker', [broker.proc.pid]),
                       ('persister', [persister.proc.pid] + descendants(
                           persister.proc.pid))):
        total = 0.0
        for pid in pids:
            try:
                total += cpu_seconds(pid)
            except OSError:
                pass  # a worker that ended
        out[name] = total
    return out


def cpu_in(used, window, records) -> dict:
    """CPU seconds a record of each process, and cores busy in all,
    between the samples nearest the *window*'s ends."""
    first = min(used, key=lambda u: abs(u[0] - window[0]))
    last = min(used, key=lambda u: abs(u[0] - window[1]))
    seconds = last[0] - first[0]
    if seconds <= 0:
        return None
    spent = {k: last[1][k] - first[1][k] for k in last[1]}
    rate = records / (window[1] - window[0])
    return {'per_record': {k: v / seconds / rate for k, v in spent.items()},
            'cores': sum(spent.values()) / seconds}


def report_cpu(variant, cpu, steady, ceiling, ceiling_influxd) -> None:
    """What the machine's two cores spent on a record in the steady
    window, and the rate they bound: with every process's cost as
    measured, the cores busy all the time, and influxd paying only what
    it paid a point in the ceiling run, no faster run is possible on this
    machine; the share of the ceiling that bound is says what 80% of it
    would need."""
    per = cpu['per_record']
    cores = os.cpu_count()
    rest = sum(v for k, v in per.items() if k != 'influxd')
    bound = cores / (ceiling_influxd + rest) if ceiling_influxd + rest \
        else 0
    print('  %s: steady window, %.2f of %d cores busy; CPU us a record: '
          '%s (influxd %.1f a point in the ceiling run); these costs on '
          '%d busy cores bound the run at %.0f records/s, %.0f%% of the '
          'ceiling (the run: %.0f%%)' % (
              variant, cpu['cores'], cores, ', '.join(
                  '%s %.1f' % (k, v * 1e6) for k, v in sorted(per.items())),
              ceiling_influxd * 1e6, cores, bound,
              100 * bound / ceiling if ceiling else 0,
              100 * steady / ceiling if ceiling and steady else 0),
          flush=True)


def databases_filled(influx) -> int:
    """Databases in which influxd holds a shard (their first point
    written), from its data directory: asking influxd would add to what is
    measured."""
    data = os.path.join(influx.dir, 'data')
    filled = 0
    try:
        databases = os.scandir(data)
    except OSError:
        return 0
    with databases:
        for database in databases:
            if database.name.startswith('_'):  # _internal
                continue
            try:
                if any(os.listdir(policy.path) for policy in
                       os.scandir(database.path) if policy.is_dir()):
                    filled += 1
            except OSError:
                pass
    return filled


def steady_end(total, extra=''):
    """Where the steady window ends: 90% of the records, or before the
    last ``buffered_points_max`` (200,000 unless *extra* sets it): once the
    host's thread has read every record, what our drivers still buffer
    waits for ``max_delay`` (nothing more comes to fill it), a tail of
    up to 10 s that says nothing about the rate."""
    held_back = extra_int(extra, 'buffered_points_max', 200000)
    return max(0.2, min(0.9, (total - held_back) / total))


def steady_window(progress, total, low=0.1, high=0.9):
    """When *low* and *high* of *total* were reached (*progress*: time and
    records counted): the backlog being worked off, without the start-up
    before it or the tail after it (the last coalesced points wait up to
    max_delay, a constant whatever the backlog). None when the run was too
    short to say."""
    # Counts come from files rewritten every second or so: keep the
    # moments each new value was first seen.
    changes = [(t, c) for i, (t, c) in enumerate(progress)
               if i == 0 or c != progress[i - 1][1]]

    def when(count):
        for (t0, c0), (t1, c1) in zip(changes, changes[1:]):
            if c0 < count <= c1:
                return t0 + (t1 - t0) * (count - c0) / (c1 - c0)
        return None
    start, end = when(total * low), when(total * high)
    if start is None or end is None or end <= start:
        return None
    return start, end


def steady_rate(progress, total, low=0.1, high=0.9):
    """Records/s in the :func:`steady_window`."""
    window = steady_window(progress, total, low, high)
    if window is None:
        return None
    return total * (high - low) / (window[1] - window[0])


def payloads_lines(payloads):
    """The line protocol our driver makes of the records (for the ceiling)."""
    from oslo_config import cfg

    from monasca_persister_dbpt import conf as dbpt_conf
    from monasca_persister_dbpt.repositories.metrics import MetricsRepository
    conf = cfg.ConfigOpts()
    dbpt_conf.register_opts(conf)
    conf([], project='bench', default_config_files=[])
    conf.set_override('db_per_tenant', True, 'influxdb')
    conf.set_override('stats_interval', 0, 'dbpt')
    repo = MetricsRepository(conf)
    out = {}
    for payload in payloads:
        line, tenant = repo.process_message(records.Message(payload))
        out.setdefault(tenant, []).append(line)
    return out


def quiet(pid, busy=0.25, timeout=60.0):
    """Wait until influxd has used under *busy* of a core for two seconds
    in a row (up to *timeout*): what is left of the run (its cache
    snapshots and compactions) would slow the ceiling and be counted in
    its CPU. (Idle, influxd with 2,000 databases keeps about a tenth of a
    core busy checking its shards.) Until 2026-12-08 the ceiling was measured at once, and the
    same run's ceiling varied from 95,000 to 184,000 points/s."""
    deadline = time.monotonic() + timeout
    calm = 0
    while calm < 2 and time.monotonic() < deadline:
        used = cpu_seconds(pid)
        time.sleep(1.0)
        calm = calm + 1 if cpu_seconds(pid) - used < busy else 0


def extra_int(extra, option, default):
    """A whole-number [dbpt] *option* as *extra* sets it, else *default*."""
    found = re.search(r'^%s\s*=\s*(\d+)' % option, extra or '', flags=re.M)
    return int(found.group(1)) if found else default


def connections(extra=''):
    """The run's write_concurrency (4 unless *extra* sets it)."""
    return extra_int(extra, 'write_concurrency', 4)


def post_ceiling(influx, tenants, lines, per_request, ways=4):
    """(points/s, influxd CPU seconds) POSTing the same lines,
    *per_request* a request over *ways* connections (the run's writers),
    into new databases as the run had them: made and given their first
    point (their first shard) before the clock starts, once influxd is
    quiet (what the run left and the creation are done). Until 2026-12-08
    the lines were written again one second later into the run's own
    databases, between points already there (which costs influxd more
    once their shards are on disk), over 2 connections."""
    session = [requests.Session() for _ in range(ways)]
    names = {t: 'ceiling_' + t for t in lines}
    made = list(names.values())
    for start in range(0, len(made), 500):
        influx.query(';'.join('CREATE DATABASE "%s"' % name
                              for name in made[start:start + 500]))

    def post(item, k):
        tenant, body = item
        r = session[k].post(influx.url + '/write', params={
            'db': names[tenant], 'precision': 'ms'}, data=body,
            timeout=60)
        assert r.status_code == 204, r.text
    first = [(t, lines[t][0].encode()) for t in lines]
    with concurrent.futures.ThreadPoolExecutor(ways) as pool:
        list(pool.map(post, first, [i % ways for i in range(len(first))]))
    bodies = [(t, '\n'.join(lines[t][i:i + per_request]).encode())
              for t in lines for i in range(1, len(lines[t]), per_request)]
    quiet(influx.proc.pid)
    before = cpu_seconds(influx.proc.pid)
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(ways) as pool:
        list(pool.map(post, bodies, [i % ways for i in range(len(bodies))]))
    took = time.monotonic() - start
    return sum(len(v) - 1 for v in lines.values()) / took, \
        cpu_seconds(influx.proc.pid) - before


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--tenants', default='10,100,1000,10000')
    parser.add_argument('--records', type=int, default=200000)
    parser.add_argument('--batch', type=int, default=20000)
    parser.add_argument('--variants', default=','.join(VARIANTS),
                        help='of %s' % ', '.join(VARIANTS + MORE_VARIANTS))
    parser.add_argument('--produce-first', action='store_true',
                        help='produce every record before the persister '
                             'starts; time from the warm records written '
                             '(database creation) to the last')
    parser.add_argument('--workers', type=int, default=1,
                        help='[kafka_metrics] num_processors, every variant')
    parser.add_argument('--consume-batch', type=int, default=CONSUME_BATCH,
                        help='[dbpt] consume_batch of the batched variants '
                             '(default %(default)s)')
    parser.add_argument('--dbpt', action='append', default=[],
                        metavar='OPTION=VALUE',
                        help='a [dbpt] option for our variants (repeatable)')
    args = parser.parse_args()
    if not 1 <= args.consume_batch <= 100000:
        parser.error('--consume-batch takes a whole number from 1 to '
                     '100000, not %d' % args.consume_batch)
    if args.workers < 1:
        parser.error('--workers takes a whole number of at least 1, not %d'
                     % args.workers)
    for option in args.dbpt:
        if '=' not in option:
            parser.error('--dbpt takes OPTION=VALUE, not %r' % option)
    work = scratch_dir('dbpt-e2e-')
    start_ms = int(time.time() * 1000) - 3 * 3600 * 1000
    print('%8s  %-14s %10s %9s %9s %9s %12s %8s' % (
        'tenants', 'variant', 'records/s', 'vs upstr', 'steady/s',
        'pts/req', 'ceiling pt/s', 'RSS MiB'))
    for count in [int(t) for t in args.tenants.split(',')]:
        tenants = ['%032x' % (0xbe0000 + i) for i in range(count)]
        warm = records.metric_stream(count, tenants, start_ms - 10 ** 6,
                                     seed=1, hosts=1, names=1)
        payloads = records.metric_stream(args.records, tenants, start_ms,
                                         seed=2)
        results = {}
        for variant in args.variants.split(','):
            results[variant] = run(variant, tenants, payloads, warm, work,
                                   args.batch,
                                   produce_first=args.produce_first,
                                   extra='\n'.join(args.dbpt),
                                   workers=args.workers,
                                   consume_batch=args.consume_batch)
        base = results.get('upstream', (None,))[0]
        for variant, (rate, per_request, rss, ceiling, steady) in \
                results.items():
            print('%8d  %-14s %10.0f %9s %9s %9.1f %12.0f %8.1f' % (
                count, variant, rate,
                '%.2fx' % (rate / base) if base else '-',
                '%.0f' % steady if steady else '-', per_request or 0,
                ceiling or 0, rss))
            sys.stdout.flush()


if __name__ == '__main__':
    main()
