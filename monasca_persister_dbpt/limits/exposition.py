"""The counters in the Prometheus text format, per tenant and reason.

Each worker process writes its own file (``monasca_persister_dbpt_<pid>
.prom``, a ``pid`` label on every sample, so node_exporter's textfile
collector never sees a sample twice), and removes the files of workers that
ended. With an HTTP address, one worker binds it and serves all the files
of the directory merged, so a scrape sees every worker; the others try the
address again at each interval and take over if that worker ends. The
format is prometheus_client's own.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import tempfile
import threading
import time
from typing import Optional

from prometheus_client import CollectorRegistry, Metric
from prometheus_client import start_http_server, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from monasca_persister_dbpt.stats import Stats

LOG = logging.getLogger(__name__)

PREFIX = 'monasca_persister_dbpt_'
_FILE = re.compile(r'monasca_persister_dbpt_(\d+)\.prom$')

#: Counters with a reason: event prefix -> (metric, help).
_WITH_REASON = {
    'refused_': ('points_refused', 'Points refused by a per-tenant limit, '
                 'by tenant and reason (committed, not written).'),
    'dropped_': ('points_dropped', 'Points InfluxDB would not take, by '
                 'tenant and reason (committed, not written).'),
}


def parse_address(text: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:port`` for IPv6) -> (host, port)."""
    host, sep, port = str(text).strip().rpartition(':')
    host = host.strip('[]')
    if not sep or not host or not port.isdigit() or \
            not 0 < int(port) < 65536:
        raise ValueError('[dbpt] prometheus_address %r is not host:port'
                         % (text,))
    return host, int(port)


class _Counters:
    """A collector over one worker's Stats."""

    def __init__(self, stats: Stats) -> None:
        self._stats = stats

    def collect(self):
        pid = str(os.getpid())
        families = {}

        def family(metric: str, doc: str, labels: list):
            if metric not in families:
                families[metric] = CounterMetricFamily(
                    PREFIX + metric, doc, labels=labels + ['pid'])
            return families[metric]
        for tenant, counts in self._stats.per_tenant().items():
            for event, value in counts.items():
                for prefix, (metric, doc) in _WITH_REASON.items():
                    if event.startswith(prefix):
                        family(metric, doc, ['tenant', 'reason']).add_metric(
                            [tenant, event[len(prefix):], pid], value)
                        break
                else:
                    family(event, 'Per-tenant count of %s.'
                           % event.replace('_', ' '), ['tenant']).add_metric(
                               [tenant, pid], value)
        yield from families.values()
        for name, value in self._stats.gauges().items():
            if not isinstance(value, (int, float)):
                continue
            gauge = GaugeMetricFamily(PREFIX + name, 'Current %s.'
                                      % name.replace('_', ' '),
                                      labels=['pid'])
            gauge.add_metric([pid], value)
            yield gauge
        for name, (label, values) in self._stats.labelled_gauges().items():
            gauge = GaugeMetricFamily(PREFIX + name, 'Current %s, per %s.'
                                      % (name.replace('_', ' '), label),
                                      labels=[label, 'pid'])
            for value, level in sorted(values.items()):
                gauge.add_metric([value, pid], level)
            yield gauge


class _Directory:
    """A collector over every worker's file, merged by metric name."""

    def __init__(self, path: str) -> None:
        self._path = path

    def collect(self):
        merged: dict[str, Metric] = {}
        for path in sorted(glob.glob(os.path.join(self._path, '*.prom'))):
            try:
                with open(path, encoding='utf-8') as handle:
                    text = handle.read()
                families = list(text_string_to_metric_families(text))
            except (OSError, ValueError) as exc:
                LOG.debug('skipping %s: %s', path, exc)
                continue
            for family in families:
                into = merged.get(family.name)
                if into is None:
                    into = merged[family.name] = Metric(
                        family.name, family.documentation, family.type)
                into.samples.extend(family.samples)
        yield from merged.values()


class PrometheusExporter:
    def __init__(self, stats: Stats, directory: Optional[str] = None,
                 address: Optional[str] = None,
                 interval: float = 15.0) -> None:
        self._address = parse_address(address) if address else None
        if directory is None and self._address:
            directory = os.path.join(
                tempfile.gettempdir(),
                'monasca-persister-dbpt-prometheus-%d' % self._address[1])
        self.directory = directory
        self._interval = interval
        self._own = CollectorRegistry(auto_describe=False)
        self._own.register(_Counters(stats))
        self._served = None
        self._pid = None

    @property
    def path(self) -> str:
        return os.path.join(self.directory,
                            'monasca_persister_dbpt_%d.prom' % os.getpid())

    def start(self) -> None:
        """Start this process's thread (once per process: the host forks
        its workers)."""
        if self.directory is None or self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._served = None
        os.makedirs(self.directory, exist_ok=True)
        threading.Thread(target=self._run, daemon=True,
                         name='dbpt-prometheus').start()

    def _run(self) -> None:
        while True:
            try:
                self.export()
            except Exception:  # noqa: BLE001 - never end the worker
                LOG.exception('dbpt Prometheus export failed')
            time.sleep(self._interval)

    def export(self) -> None:
        write_to_textfile(self.path, self._own)
        self._remove_ended()
        if self._address and self._served is None:
            self._serve()

    def _remove_ended(self) -> None:
        for path in glob.glob(os.path.join(self.directory, '*.prom')):
            found = _FILE.search(path)
            if not found or int(found.group(1)) == os.getpid():
                continue
            try:
                os.kill(int(found.group(1)), 0)
            except ProcessLookupError:
                try:
                    os.remove(path)
                except OSError:
                    pass
            except OSError:  # alive, another user's
                pass

    def _serve(self) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Directory(self.directory))
        host, port = self._address
        try:
            self._served = start_http_server(port, addr=host,
                                             registry=registry)
        except OSError:  # another worker serves it
            return
        LOG.info('dbpt Prometheus counters of every worker at '
                 'http://%s:%d/metrics (pid %d)', host, port, os.getpid())


def read_refusals(source: str) -> dict:
    """tenant -> {reason: points} from what the persister exposes: an
    ``http(s)://`` scrape address, a textfile directory, one ``.prom``
    file, or the JSON ``[dbpt] stats_file``; every worker summed."""
    counts: dict = {}

    def add(tenant, reason, value) -> None:
        reasons = counts.setdefault(tenant, {})
        reasons[reason] = reasons.get(reason, 0) + int(value)
    if source.startswith(('http://', 'https://')):
        import requests
        response = requests.get(source, timeout=30)
        response.raise_for_status()
        texts = [response.text]
    elif os.path.isdir(source):
        texts = []
        for path in sorted(glob.glob(os.path.join(source, '*.prom'))):
            with open(path, encoding='utf-8') as handle:
                texts.append(handle.read())
    else:
        with open(source, encoding='utf-8') as handle:
            text = handle.read()
        if text.lstrip().startswith('{'):
            for tenant, events in json.loads(text).get('tenants', {}).items():
                for event, value in events.items():
                    if event.startswith('refused_'):
                        add(tenant, event[len('refused_'):], value)
            return counts
        texts = [text]
    refused = PREFIX + _WITH_REASON['refused_'][0]
    for text in texts:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == refused + '_total':
                    add(sample.labels.get('tenant'),
                        sample.labels.get('reason'), sample.value)
    return counts
