"""The host's own consumer loop, writing to a file, for SIGKILL tests.

Runs monasca-persister's ``ConfluentKafkaPersister`` (the real loop and the
real monasca-common consumer) with a repository that appends each record to
a file and fsyncs before returning, so "written" is exact. Usage:

    python host_loop_child.py BOOTSTRAP TOPIC GROUP OUTFILE GUARD(0|1) BATCH
"""

import os
import sys
import types


class FileRepository:
    out = None

    def __init__(self):
        from monasca_persister.repositories.data_points import \
            DataPointsAsList
        self.data_points_class = DataPointsAsList

    def process_message(self, message):
        return message.value().decode(), None

    def write_batch(self, data_points):
        with open(FileRepository.out, 'a') as handle:
            handle.write(''.join(v + '\n' for v in data_points))
            handle.flush()
            os.fsync(handle.fileno())


def main():
    bootstrap, topic, group, out, guard, batch = sys.argv[1:7]
    FileRepository.out = out
    if guard == '1':
        from monasca_persister_dbpt.commits import guard as commit_guard
        assert commit_guard.install(True)
    # A short session timeout only makes the group rebalance sooner after a
    # kill (tansu joins take about half of it); commits are unaffected.
    from monasca_common.confluent_kafka import consumer
    defaults = list(consumer.KafkaConsumer.__init__.__defaults__)
    defaults[-1] = 4000  # timeout (ms): session.timeout.ms
    consumer.KafkaConsumer.__init__.__defaults__ = tuple(defaults)
    from monasca_persister.kafka.confluent_kafka_persister import \
        ConfluentKafkaPersister
    conf = types.SimpleNamespace(uri=[bootstrap], group_id=group,
                                 topic=topic, batch_size=int(batch),
                                 max_wait_time_seconds=1)
    ConfluentKafkaPersister(conf, FileRepository).run()


if __name__ == '__main__':
    main()
