"""How fast the host's Kafka consumer alone reads the broker.

Produces ``--records`` metric records (the same stream as
bench/persister_e2e.py) to a fresh tansu, then polls them one message a
call as monasca-common's confluent consumer does, and in batches as
``[dbpt] consume_batch`` does, each with and without the host's
``fetch.min.bytes`` of 1 MiB, and prints messages/s. Nothing is parsed or
written: the rate the persister could reach if the consumer were all it did.

    .venv/bin/python bench/consumer_rate.py --records 300000
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


def rate(broker, topic, n, group, fetch_min_bytes, batch=0):
    config = {'bootstrap.servers': broker.bootstrap, 'group.id': group,
              'auto.offset.reset': 'earliest', 'enable.auto.commit': False,
              'session.timeout.ms': 6000}
    if fetch_min_bytes:
        config['fetch.min.bytes'] = fetch_min_bytes
    consumer = confluent_kafka.Consumer(config)
    consumer.subscribe([topic])
    got, start = 0, None
    try:
        while got < n:
            if batch:  # as [dbpt] consume_batch: what is fetched, no wait
                messages = consumer.consume(batch, 0) or \
                    [m for m in [consumer.poll(5)] if m is not None]
            else:  # one message a call, as the host
                message = consumer.poll(5)
                messages = [message] if message is not None else []
            for message in messages:
                if message.error():
                    continue
                if start is None:  # the group join is not counted
                    start = time.monotonic()
                got += 1
        return got / (time.monotonic() - start)
    finally:
        consumer.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--records', type=int, default=300000)
    parser.add_argument('--tenants', type=int, default=1000)
    args = parser.parse_args()
    broker = servers.KafkaBroker().start()
    try:
        broker.create_topic('metrics')
        tenants = ['%032x' % (0xbe0000 + i) for i in range(args.tenants)]
        produce(broker, 'metrics', records.metric_stream(
            args.records, tenants, int(time.time() * 1000), seed=2))
        for label, fetch_min in (("host's fetch.min.bytes 1 MiB", 1048576),
                                 ('librdkafka defaults', None)):
            for batch in (0, 1000):
                print('%-30s %-22s %9.0f messages/s' % (
                    label, 'consume(1000, 0)' if batch else 'poll() each',
                    rate(broker, 'metrics', args.records,
                         'g-%s-%d' % (fetch_min, batch), fetch_min, batch)))
    finally:
        broker.close()


if __name__ == '__main__':
    main()
