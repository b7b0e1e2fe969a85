"""The host's commit contract, in one place.

monasca-persister commits Kafka offsets after each ``write_batch``; what it
may commit is decided here:

- :mod:`.guard` patches the host's commit: synchronous, and (when a
  watermark is registered) with explicit offsets per partition;
- :mod:`.watermark` tracks, per partition, the offset below which every
  record is written or deliberately refused: the low watermark, the only
  offset ever committed;
- :mod:`.buffers` keeps each tenant's points across host flushes
  (coalescing) and holds the points of a server that is down; both are just
  points not written yet, so they hold the watermark back and nothing else.
"""
