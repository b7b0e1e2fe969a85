"""The host thread's own cost a record, in process: our metrics driver
under the host's loop, one message a call and batches taken whole.

Runs what monasca-persister's ``Persister.run`` does (bench/write_path.py's
``host_loop``) over the same records of ``--tenants`` tenants against one
influxd, with the watermark on as under the commit guard, once with one
``process_message`` a message and once with ``consume_batch``'s
:class:`~monasca_persister_dbpt.commits.consumer.Messages`, alternating,
``--repeat`` times; then ``to_line`` alone and with the parsing
(``_line_of``), best of five. No Kafka: what the consumer costs is
bench/consumer_rate.py's.

    .venv/bin/python bench/host_loop.py
    .venv/bin/python bench/host_loop.py --tenants 1000
    .venv/bin/python bench/host_loop.py --tenants 1000 --gc-threshold 0
    .venv/bin/python bench/host_loop.py --tenants 1000 --consume-batch 10000
    .venv/bin/python bench/host_loop.py --tenants 1000 --partitions 4

Wall time (with its waits for room) and the CPU of the host's thread alone.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time

import orjson

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from oslo_config import cfg  # noqa: E402

from bench.write_path import configure, host_loop  # noqa: E402
from bench.write_path import make_messages as messages  # noqa: E402
from bench.write_path import ours  # noqa: E402
from monasca_persister_dbpt.commits.consumer import Messages  # noqa: E402
from monasca_persister_dbpt.commits.watermark import Watermark  # noqa: E402
from tests import servers  # noqa: E402


def best_of(func, items, runs=5):
    best = float('inf')
    for _ in range(runs):
        start = time.perf_counter()
        for item in items:
            func(item)
        best = min(best, time.perf_counter() - start)
    return best / len(items) * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--records', type=int, default=200000)
    parser.add_argument('--tenants', type=int, default=10)
    parser.add_argument('--batch', type=int, default=20000,
                        help='[kafka_metrics] batch_size (default 20000)')
    parser.add_argument('--consume-batch', type=int, default=1000)
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--partitions', type=int, default=1,
                        help='spread the records over this many partitions, '
                             'in runs of 100 as a consumer gets them')
    parser.add_argument('--gc-threshold', type=int, default=None,
                        help='[dbpt] gc_threshold (0: Python\'s 700)')
    args = parser.parse_args()
    if args.partitions < 1:
        parser.error('--partitions takes a whole number of at least 1, '
                     'not %d' % args.partitions)

    def spread(batch):
        for i, message in enumerate(batch):
            message._partition = (i // 100) % args.partitions
        return batch
    influx = servers.InfluxServer().start()
    try:
        configure(influx, 4, 5000)
        cfg.CONF.set_override('max_delay', 10.0, 'dbpt')   # the default
        cfg.CONF.set_override('spill_dir', '', 'dbpt')
        if args.gc_threshold is not None:
            cfg.CONF.set_override('gc_threshold', args.gc_threshold, 'dbpt')
        repo = ours()
        if repo.watermark is None:   # as under the commit guard
            repo.watermark = Watermark()
        base = int(time.time() * 1000) - 3600 * 1000
        offset = 0
        # Warm: the databases exist and every series is known.
        warm = messages(args.records // 10, args.tenants, base, offset)
        host_loop(repo, warm, args.batch)
        offset += len(warm)
        took = {'one message a call': [], 'batches taken whole': []}
        cpu = {label: [] for label in took}
        for _ in range(args.repeat):
            for label in took:
                batch = spread(messages(args.records, args.tenants, base,
                                        offset))
                offset += len(batch)
                if label == 'batches taken whole':
                    k = args.consume_batch
                    batch = [Messages(batch[i:i + k])
                             for i in range(0, len(batch), k)]
                before = time.thread_time()
                took[label].append(host_loop(repo, batch, args.batch) /
                                   args.records * 1e6)
                cpu[label].append((time.thread_time() - before) /
                                  args.records * 1e6)
        repo.buffers.flush(True)
        print('%d tenants, %d records a run, host batch %d, consume batch '
              '%d, collector threshold %d, medians of %d:' % (
                  args.tenants, args.records, args.batch, args.consume_batch,
                  gc.get_threshold()[0], args.repeat))
        for label, runs in took.items():
            print('  host loop, %-20s %5.2f us a record (runs: %s); its '
                  'thread\'s CPU %5.2f (runs: %s)' % (
                      label, statistics.median(runs),
                      ', '.join('%.2f' % r for r in runs),
                      statistics.median(cpu[label]),
                      ', '.join('%.2f' % r for r in cpu[label])))
        sample = messages(100000, args.tenants, base, 0)
        decoded = [orjson.loads(m.value()) for m in sample]
        print('  to_line alone               %5.2f us a record' %
              best_of(repo.to_line, decoded))
        print('  parsing and to_line         %5.2f us a record' %
              best_of(repo._line_of, sample))
    finally:
        influx.close()


if __name__ == '__main__':
    main()
