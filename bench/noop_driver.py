"""A metrics driver that stores nothing: the host loop's own ceiling.

It hands each raw record on without parsing it and drops the batch at
``write_batch``; the host still logs ``Processed N messages`` per flush,
which is how bench/persister_e2e.py counts it. With the environment
variable ``DBPT_BENCH_CONSUME_BATCH=N`` it installs our batched consumer
first (``[dbpt] consume_batch``), to measure the host loop with it.
"""

import os

from monasca_persister.repositories import abstract_repository
from monasca_persister.repositories import data_points

from monasca_persister_dbpt.commits import consumer


class NoopRepository(abstract_repository.AbstractRepository):
    def __init__(self):
        super().__init__()
        self.data_points_class = data_points.DataPointsAsList
        consumer.install(int(os.environ.get('DBPT_BENCH_CONSUME_BATCH', 0)))

    def process_message(self, message):
        return message.value(), None

    def write_batch(self, data_points):
        pass
