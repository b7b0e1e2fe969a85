"""How fast the host's Kafka consumer alone reads the broker.

Produces ``--records`` metric records (the same stream as
bench/persister_e2e.py) to a fresh tansu, then polls them one message a
call as monasca-common's confluent consumer does, and in batches as
``[dbpt] consume_batch`` does, each with and without the host's
``fetch.min.bytes`` of 1 MiB, and with ``fetch.queue.backoff.ms`` 10 as
``[dbpt] fetch_queue_backoff_ms`` sets it, and prints messages/s (and, for
the batches, the time waited in ``poll()`` once the fetched queue ran
dry). Nothing is parsed or written: the rate the persister could reach if
the consumer were all it did; ``--work-us`` adds busy work a message,
standing for a driver.

    .venv/bin/python bench/consumer_rate.py --records 300000
    .venv/bin/python bench/consumer_rate.py --records 1000000 --tenants 10 \
        --work-us 7
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import confluent_kafka

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from bench.persister_e2e import produce  # noqa: E402
from tests import records  # noqa: E402
from tests import servers  # noqa: E402


def rate(broker, topic, n, group, fetch_min_bytes, batch=0, settings=None,
         work_us=0.0, stall=(0, 0.0)):
    """(messages/s, seconds waited in poll() after an empty consume(),
    how many times) once the group has joined; *work_us* of busy work a
    message stands for a driver."""
    config = {'bootstrap.servers': broker.bootstrap, 'group.id': group,
              'auto.offset.reset': 'earliest', 'enable.auto.commit': False,
              'session.timeout.ms': 6000, **(settings or {})}
    if fetch_min_bytes:
        config['fetch.min.bytes'] = fetch_min_bytes
    consumer = confluent_kafka.Consumer(config)
    consumer.subscribe([topic])
    got, start, waited, empty = 0, None, 0.0, 0
    stall_every, stall_s = stall
    stalled = 0
    try:
        while got < n:
            if batch:  # as [dbpt] consume_batch: what is fetched, no wait
                messages = consumer.consume(batch, 0)
                if not messages:
                    before = time.perf_counter()
                    messages = [m for m in [consumer.poll(5)]
                                if m is not None]
                    if start is not None:
                        waited += time.perf_counter() - before
                        empty += 1
            else:  # one message a call, as the host
                message = consumer.poll(5)
                messages = [message] if message is not None else []
            for message in messages:
                if message.error():
                    continue
                if start is None:  # the group join is not counted
                    start = time.monotonic()
                got += 1
            if stall_every and got - stalled >= stall_every:
                # The driver's thread waiting for room in its buffers.
                time.sleep(stall_s)
                stalled = got
            if work_us:
                until = time.perf_counter() + work_us * 1e-6 * len(messages)
                while time.perf_counter() < until:
                    pass
        return got / (time.monotonic() - start), waited, empty
    finally:
        consumer.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--records', type=int, default=300000)
    parser.add_argument('--tenants', type=int, default=1000)
    parser.add_argument('--work-us', type=float, default=0.0,
                        help='busy work a message, standing for a driver')
    parser.add_argument('--stall', default='0,0', metavar='N,MS',
                        help='sleep MS every N messages, standing for a '
                             'driver waiting for room in its buffers')
    args = parser.parse_args()
    try:
        every, ms = args.stall.split(',')
        stall = (int(every), float(ms) / 1000)
    except ValueError:
        parser.error('--stall takes N,MS, not %r' % args.stall)
    broker = servers.KafkaBroker().start()
    backoff = {'fetch.queue.backoff.ms': 10}
    try:
        broker.create_topic('metrics')
        tenants = ['%032x' % (0xbe0000 + i) for i in range(args.tenants)]
        produce(broker, 'metrics', records.metric_stream(
            args.records, tenants, int(time.time() * 1000), seed=2))
        rows = [("host's fetch.min.bytes 1 MiB", 1048576, None),
                ('librdkafka defaults', None, None),
                ("host's, fetch.queue.backoff.ms 10", 1048576, backoff)]
        for n, (label, fetch_min, settings) in enumerate(rows):
            for batch in (0, 1000):
                got, waited, empty = rate(
                    broker, 'metrics', args.records, 'g-%d-%d' % (n, batch),
                    fetch_min, batch, settings, args.work_us, stall)
                print('%-34s %-17s %9.0f messages/s%s' % (
                    label, 'consume(1000, 0)' if batch else 'poll() each',
                    got, ', %.2f s in poll() after %d empty consume()'
                    % (waited, empty) if batch else ''), flush=True)
    finally:
        broker.close()


if __name__ == '__main__':
    main()
