"""Servers: which InfluxDB holds a tenant.

In order: the tenant servers file (re-read when it changes, without a
restart), then rendezvous (highest random weight) hashing over
``[dbpt] hash_servers``, then the default server. Rendezvous hashing moves
little when a server is added: about 1/(n+1) of the hashed tenants, all of
them to the new server (``sha1 % n`` moved two thirds of them going from 2
to 3). A server may carry a weight (``influx2:2``): it receives that many
times the share of a weight-1 server.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import time
import urllib.parse
from typing import Mapping, Optional, Sequence

from monasca_persister_dbpt.placement.errors import InvalidOption

LOG = logging.getLogger(__name__)

#: Seconds between two looks at the tenant servers file.
SERVERS_FILE_CHECK = 10.0


@dataclasses.dataclass(frozen=True)
class Server:
    """One InfluxDB 1.x HTTP endpoint."""

    host: str
    port: int = 8086
    ssl: bool = False
    verify_ssl: bool = False
    user: Optional[str] = None
    password: Optional[str] = dataclasses.field(default=None, repr=False)

    @property
    def url(self) -> str:
        return '%s://%s:%d' % ('https' if self.ssl else 'http',
                               self.host, self.port)


def parse_server(url: str, like: Server) -> Server:
    """``http(s)://host:port`` -> Server, credentials taken from *like*."""
    parsed = urllib.parse.urlsplit(str(url).strip())
    if parsed.scheme not in ('http', 'https') or not parsed.hostname:
        raise ValueError('server %r is not http(s)://host:port' % (url,))
    return dataclasses.replace(like, host=parsed.hostname,
                               port=parsed.port or 8086,
                               ssl=parsed.scheme == 'https')



def _unit_hash(server_name: str, tenant_id: str) -> float:
    """A stable number in (0, 1) for a (server, tenant) pair."""
    digest = hashlib.sha1(('%s\x00%s' % (server_name, tenant_id))
                          .encode('utf-8')).digest()
    return (int.from_bytes(digest[:8], 'big') + 1) / (2 ** 64 + 2)


def rendezvous(tenant_id: str, weights: Mapping[str, float]) -> str:
    """The name of the server with the highest score for *tenant_id*.

    Weighted rendezvous hashing (score ``-w / ln(h)``): each server's
    share is its weight over the sum, and a new server takes tenants only
    from the others, never moves them between them.
    """
    return max(weights, key=lambda name: (
        -weights[name] / math.log(_unit_hash(name, tenant_id)), name))


def parse_hash_servers(items: Sequence[str]) -> dict[str, float]:
    """``default,influx2:2`` -> {name: weight}."""
    weights: dict[str, float] = {}
    for item in items:
        name, sep, weight = str(item).strip().partition(':')
        name = name.strip()
        try:
            value = float(weight) if sep else 1.0
        except ValueError:
            value = -1.0
        if not name or not value > 0 or math.isinf(value):
            raise InvalidOption('[dbpt] hash_servers: %r is not <server> or '
                                '<server>:<weight> with a positive weight'
                                % (item,))
        if name in weights:
            raise InvalidOption('[dbpt] hash_servers names %r twice' % name)
        weights[name] = value
    return weights


class ServerMap:
    """Tenant id -> Server; the map file is re-read when it changes."""

    def __init__(self, default: Server,
                 servers: Optional[Mapping[str, Server]] = None,
                 tenant_servers_file: Optional[str] = None,
                 hash_servers: Sequence[str] = ()) -> None:
        self.default = default
        self.servers = dict(servers or {})
        self.servers.setdefault('default', default)
        self.weights = parse_hash_servers(hash_servers)
        for name in self.weights:
            if name not in self.servers:
                raise InvalidOption('[dbpt] hash_servers names %r, which is '
                                    'not in [dbpt] servers' % name)
        self.tenant_servers_file = tenant_servers_file
        self._mapped: dict[str, Server] = {}
        self._seen = None
        self._next = 0.0
        #: Called with no argument after the map changed.
        self.on_change = None
        if tenant_servers_file:
            self.check_file()  # a bad file fails at start-up

    def name_of(self, server: Server) -> str:
        return next((n for n, s in self.servers.items() if s == server),
                    server.url)

    def hashed(self, tenant_id: str, weights: Optional[Mapping[str, float]]
               = None) -> Server:
        """Where the hash alone puts *tenant_id* (ignoring the map file)."""
        weights = self.weights if weights is None else weights
        if not weights:
            return self.default
        return self.servers[rendezvous(tenant_id, weights)]

    def server_for(self, tenant_id: str) -> Server:
        """The servers file, else the hash, else the default."""
        server = self._mapped.get(tenant_id)
        if server is not None:
            return server
        return self.hashed(tenant_id)

    def check_file(self) -> None:
        """Re-read the tenant servers file when it changed (at most every
        SERVERS_FILE_CHECK seconds); a bad file keeps the last good map."""
        now = time.monotonic()
        if not self.tenant_servers_file or now < self._next:
            return
        self._next = now + SERVERS_FILE_CHECK
        try:
            stat = os.stat(self.tenant_servers_file)
        except OSError as exc:
            if self._seen is not None:
                LOG.error('tenant servers file: %s; keeping the last map',
                          exc)
                return
            raise InvalidOption('[dbpt] tenant_servers_file: %s' % exc) \
                from None
        seen = (stat.st_mtime_ns, stat.st_size)
        if seen == self._seen:
            return
        mapping = {}
        with open(self.tenant_servers_file, encoding='utf-8') as handle:
            for number, line in enumerate(handle, 1):
                words = line.split('#', 1)[0].split()
                if not words:
                    continue
                if len(words) != 2 or words[1] not in self.servers:
                    message = ('%s line %d: %r is not "tenant server" with a '
                               'server of [dbpt] servers (%s)' % (
                                   self.tenant_servers_file, number,
                                   line.strip(),
                                   ', '.join(sorted(self.servers))))
                    if self._seen is None:
                        raise InvalidOption('[dbpt] tenant_servers_file: '
                                            + message)
                    LOG.error('%s; keeping the last map', message)
                    return
                mapping[words[0]] = self.servers[words[1]]
        if self._seen is not None:
            LOG.info('tenant servers file %s changed: %d tenant(s) placed',
                     self.tenant_servers_file, len(mapping))
        self._seen = seen
        self._mapped = mapping
        if self.on_change is not None:
            self.on_change()
