"""Servers: which InfluxDB holds a tenant.

In order: the tenant overrides file (:mod:`.overrides`, re-read when it
changes, without a restart), then rendezvous (highest random weight) hashing over
``[dbpt] hash_servers``, then the default server. Rendezvous hashing moves
little when a server is added: about 1/(n+1) of the hashed tenants, all of
them to the new server (``sha1 % n`` moved two thirds of them going from 2
to 3). A server may carry a weight (``influx2:2``): it receives that many
times the share of a weight-1 server.

With ``[dbpt] replicas = R`` a tenant lives on the first R servers of its
rendezvous order (or on every server its overrides line names); adding a
server moves about R/(n+1) of the copies, each to the new server.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import urllib.parse
from typing import Mapping, Optional, Sequence

from monasca_persister_dbpt.placement.errors import InvalidOption
from monasca_persister_dbpt.placement.overrides import TenantOverrides


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
    return max(weights, key=lambda name: _score(name, tenant_id, weights))


def rendezvous_order(tenant_id: str, weights: Mapping[str, float],
                     count: int) -> tuple:
    """The *count* highest-scoring server names, best first: a tenant's
    replicas. A new server enters a tenant's first *count* only by pushing
    out the last of them, so it takes about count/(n+1) of the copies."""
    ranked = sorted(weights, key=lambda name: _score(name, tenant_id,
                                                     weights), reverse=True)
    return tuple(ranked[:count])


def _score(name: str, tenant_id: str, weights: Mapping[str, float]) -> tuple:
    return (-weights[name] / math.log(_unit_hash(name, tenant_id)), name)


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
    """Tenant id -> its servers: the overrides file, else the hash, else
    the default server."""

    def __init__(self, default: Server,
                 servers: Optional[Mapping[str, Server]] = None,
                 overrides_file: Optional[str] = None,
                 hash_servers: Sequence[str] = (),
                 replicas: int = 1) -> None:
        self.default = default
        self.servers = dict(servers or {})
        self.servers.setdefault('default', default)
        self.weights = parse_hash_servers(hash_servers)
        for name in self.weights:
            if name not in self.servers:
                raise InvalidOption('[dbpt] hash_servers names %r, which is '
                                    'not in [dbpt] servers' % name)
        if replicas < 1:
            raise InvalidOption('[dbpt] replicas %r: must be 1 or more'
                                % (replicas,))
        if replicas > 1 and len(self.weights) < replicas:
            raise InvalidOption(
                '[dbpt] replicas = %d needs at least %d servers in [dbpt] '
                'hash_servers (it names %d): each replica of a tenant lives '
                'on a server of its own' % (replicas, replicas,
                                            len(self.weights)))
        self.replicas = replicas
        # A bad file fails here, at start-up.
        self.overrides = TenantOverrides(overrides_file, self.servers)

    def hashed(self, tenant_id: str, weights: Optional[Mapping[str, float]]
               = None) -> Server:
        """Where the hash alone puts *tenant_id* (ignoring the file)."""
        weights = self.weights if weights is None else weights
        if not weights:
            return self.default
        return self.servers[rendezvous(tenant_id, weights)]

    def server_for(self, tenant_id: str) -> Server:
        """The overrides file, else the hash, else the default."""
        return self.replicas_for(tenant_id)[0]

    def hashed_replicas(self, tenant_id: str, weights: Optional[
            Mapping[str, float]] = None) -> tuple:
        """Where the hash alone puts *tenant_id*'s replicas."""
        weights = self.weights if weights is None else weights
        if not weights:
            return (self.default,)
        if self.replicas == 1:
            return (self.servers[rendezvous(tenant_id, weights)],)
        return tuple(self.servers[name] for name in rendezvous_order(
            tenant_id, weights, self.replicas))

    def replicas_for(self, tenant_id: str) -> tuple:
        """Every server holding *tenant_id*'s database, the first one
        first: its line of the overrides file, else the hash."""
        names = self.overrides.servers_of(tenant_id)
        if names is not None:
            return tuple(self.servers[name] for name in names)
        return self.hashed_replicas(tenant_id)
