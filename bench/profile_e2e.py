"""What bounds the real persister end to end: a profile and where CPU goes.

Runs one variant of bench/persister_e2e.py (coalescing by default) and,
while the timed records are written, samples the persister's worker with
py-spy (``pip install py-spy``; needs ptrace, root here) and counts the CPU
seconds of the worker, of influxd and of the broker. Prints the cores each
used, then the functions the worker spent most samples in (own time, and
including what they call).

    .venv/bin/python bench/profile_e2e.py --tenants 1000 --records 300000
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from bench.scratch import scratch_dir  # noqa: E402
from bench.persister_e2e import run  # noqa: E402
from bench.soak import children  # noqa: E402
from bench.write_path import cpu_seconds  # noqa: E402
from tests import records  # noqa: E402


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open('/proc/stat') as handle:
        fields = [int(v) for v in handle.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def summarize(path, top):
    own, inclusive = collections.Counter(), collections.Counter()
    threads = collections.defaultdict(collections.Counter)
    total = 0
    with open(path) as handle:
        for line in handle:
            stack, _, count = line.rstrip().rpartition(' ')
            if not count.isdigit():
                continue
            n = int(count)
            frames = [f.split(' (')[0] + ' ' + f.split('/')[-1].rstrip(')')
                      if '(' in f else f for f in stack.split(';')]
            total += n
            own[frames[-1]] += n
            for frame in set(frames):
                inclusive[frame] += n
            named = [f for f in frames if f.startswith('thread ')]
            thread = named[0].split(': ')[-1] if named else '?'
            threads[thread][' < '.join(
                f.split(' ')[0] + ':' + f.rsplit(':', 1)[-1]
                for f in reversed(frames[-3:]))] += n
    print('\n%d samples; own time:' % total)
    for frame, n in own.most_common(top):
        print('  %5.1f%%  %s' % (100 * n / total, frame))
    print('including callees:')
    for frame, n in inclusive.most_common(top * 2):
        print('  %5.1f%%  %s' % (100 * n / total, frame))
    print('per thread, where it was (innermost three frames):')
    for thread, places in sorted(threads.items()):
        count = sum(places.values())
        print('  %s: %d samples' % (thread, count))
        for place, n in places.most_common(6):
            print('    %5.1f%%  %s' % (100 * n / count, place))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--tenants', type=int, default=1000)
    parser.add_argument('--records', type=int, default=300000)
    parser.add_argument('--batch', type=int, default=20000)
    parser.add_argument('--variant', default='coalescing')
    parser.add_argument('--top', type=int, default=15)
    parser.add_argument('--gil', action='store_true',
                        help='sample only the thread holding the GIL (what '
                             'bounds a worker whose threads share one '
                             'core), not every thread idle or not')
    parser.add_argument('--seconds', type=int, default=0,
                        help='profile and count only this long after the '
                             'timed records start (the steady window, '
                             'without the last points\' max_delay); 0: '
                             'until they are written')
    parser.add_argument('--produce-first', action='store_true',
                        help='every record in Kafka before the persister '
                             'starts (the producer is not timed)')
    parser.add_argument('--dbpt', action='append', default=[],
                        metavar='OPTION=VALUE',
                        help='a [dbpt] option for our variants (repeatable)')
    args = parser.parse_args()
    for option in args.dbpt:
        if '=' not in option:
            parser.error('--dbpt takes OPTION=VALUE, not %r' % option)
    work = scratch_dir('dbpt-profile-')
    raw = os.path.join(work, 'py-spy.txt')
    tenants = ['%032x' % (0xbe0000 + i) for i in range(args.tenants)]
    start_ms = int(time.time() * 1000) - 3 * 3600 * 1000
    warm = records.metric_stream(args.tenants, tenants, start_ms - 10 ** 6,
                                 seed=1, hosts=1, names=1)
    payloads = records.metric_stream(args.records, tenants, start_ms, seed=2)

    def watch(persister, influx):
        workers = children(persister.proc.pid)
        worker = max(workers, key=cpu_seconds)  # the metrics worker
        exe = os.path.join(os.path.dirname(sys.executable), 'py-spy')
        spy = subprocess.Popen([exe if os.path.exists(exe) else 'py-spy',
                                'record', '--pid', str(worker),
                                '--format', 'raw', '--output', raw,
                                '--rate', '200', '--nonblocking',
                                '--threads'] + (
                                    ['--gil'] if args.gil else ['--idle']) + (
                                    ['--duration', str(args.seconds)]
                                    if args.seconds else []),
                               stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        pids = {'persister worker': worker, 'influxd': influx.proc.pid}
        before = {k: cpu_seconds(p) for k, p in pids.items()}
        machine = machine_busy()

        started = time.monotonic()

        def cores(took):
            used = {k: cpu_seconds(p) - before[k] for k, p in pids.items()}
            busy, total = (a - b for a, b in zip(machine_busy(), machine))
            used['whole machine'] = busy / total * os.cpu_count() * took
            return ', '.join('%s %.2f' % (k, v / took)
                             for k, v in used.items())
        if args.seconds:
            window = threading.Timer(args.seconds, lambda: print(
                'cores busy in the first %.0f s: %s' % (
                    args.seconds, cores(time.monotonic() - started)),
                flush=True))
            window.daemon = True
            window.start()

        def done(took):
            busy = cores(took)
            if spy.poll() is None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its file
            spy.wait(60)
            print('%d records in %.1f s (%.0f/s); cores busy: %s' % (
                len(payloads), took, len(payloads) / took, busy))
        return done
    rate, per_request, rss, ceiling, _ = run(args.variant, tenants, payloads,
                                          warm, work, args.batch, watch,
                                          produce_first=args.produce_first,
                                          extra='\n'.join(args.dbpt))
    print('%s at %d tenants: %.0f records/s, %.0f points per request, '
          'ceiling %.0f points/s at that size' % (
              args.variant, args.tenants, rate, per_request or 0, ceiling))
    if os.path.exists(raw):
        summarize(raw, args.top)
    else:
        print('py-spy wrote no profile (is it installed, with ptrace?)')


if __name__ == '__main__':
    main()
