"""Keep-alive connections for writes: urllib3 pools instead of requests.

A write is one POST whose answer is a status and, at worst, a short error
text. requests' ``Session`` adds about 400 µs of Python to each (merging
the environment's settings, hooks, cookies, the adapter) on top of
urllib3, which it is built on: 679 against 280 µs of CPU for a request
of 200 points (``bench/http_client.py``), spent under the GIL the host's
thread needs. At 1,000 tenants, with a request for every 200 points or
so, that was the largest cost of the worker after the records' own.
So writes POST through urllib3's pools directly, one pool per server
shared by the writer threads, with what requests would have sent:
the config's credentials (never a ``~/.netrc``), its TLS verification
(requests' CA bundle, or ``REQUESTS_CA_BUNDLE``) and its timeout.
Queries keep requests: they are rare, and their JSON is what it is for.

A server the environment sends through a proxy (``HTTP_PROXY`` and
``NO_PROXY``, as requests reads them) is written with requests, so a
deployment that relies on its proxy keeps it.
"""

from __future__ import annotations

import os
import threading
import urllib.parse
from typing import Mapping, Optional

import requests
import urllib3

from monasca_persister_dbpt.placement import Server

#: The body of every write: line protocol, already encoded.
_OCTETS = {'Content-Type': 'application/octet-stream'}
#: Idle connections a server's pool keeps, at least.
KEEP_IDLE = 64


class NoAnswer(Exception):
    """The server did not answer (refused, reset, timed out, TLS failed):
    the only kind of failure that can mark a server down."""


class WritePools:
    """One keep-alive pool per server for POSTs; thread-safe."""

    def __init__(self, size: int, timeout: float) -> None:
        self._size = max(1, size)
        self._timeout = urllib3.Timeout(connect=timeout, read=timeout)
        self._lock = threading.Lock()
        #: Server -> (pool, headers), or None when it is proxied.
        self._pools: dict = {}

    def post(self, server: Server, path: str, params: Mapping[str, str],
             body: bytes, session=None) -> tuple[int, str]:
        """POST *body*; the answer's status and text. Raises
        :class:`NoAnswer` when there is none. *session* is a function
        giving requests' session for a proxied server."""
        entry = self._pools.get(server)
        if entry is None and server not in self._pools:
            entry = self._pool(server)
        url = path + '?' + urllib.parse.urlencode(params)
        if entry is None:
            try:
                response = session(server).post(
                    server.url + url, data=body, headers=_OCTETS,
                    timeout=self._timeout.read_timeout)
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise NoAnswer(str(exc)) from exc
            return response.status_code, response.text
        pool, headers = entry
        try:
            response = pool.urlopen('POST', url, body=body, headers=headers,
                                    retries=False, redirect=False)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise NoAnswer(str(exc)) from exc
        return response.status, response.data.decode('utf-8', 'replace')

    def _pool(self, server: Server) -> Optional[tuple]:
        with self._lock:
            if server in self._pools:
                return self._pools[server]
            entry = None
            if not proxied(server):
                entry = (self._new_pool(server), _headers(server))
            self._pools[server] = entry
            return entry

    def _new_pool(self, server: Server) -> urllib3.HTTPConnectionPool:
        # Connections are opened as threads need them; maxsize only bounds
        # the idle ones kept. The migration writes from its own workers
        # through a writer of concurrency 1, and a pool that is full
        # closes the extra connection and logs a warning each time.
        common = dict(maxsize=max(self._size, KEEP_IDLE), block=False,
                      retries=False, timeout=self._timeout)
        if not server.ssl:
            return urllib3.HTTPConnectionPool(server.host, server.port,
                                              **common)
        if server.verify_ssl:
            bundle = ca_bundle()
            where = {'ca_cert_dir' if os.path.isdir(bundle) else 'ca_certs':
                     bundle}
            return urllib3.HTTPSConnectionPool(
                server.host, server.port, cert_reqs='CERT_REQUIRED',
                **where, **common)
        return urllib3.HTTPSConnectionPool(
            server.host, server.port, cert_reqs='CERT_NONE',
            assert_hostname=False, **common)

    def close(self) -> None:
        with self._lock:
            for entry in self._pools.values():
                if entry is not None:
                    entry[0].close()
            self._pools.clear()


def _no_credentials(request):
    return request


def new_session(server: Server) -> requests.Session:
    """A requests session for *server* (queries, and writes through a
    proxy): its TLS verification and the config's credentials only.
    Without credentials set, requests looks for a ~/.netrc on every
    request (a few percent of the writer's time), which upstream's client
    never read."""
    session = requests.Session()
    session.verify = server.verify_ssl
    session.auth = (server.user, server.password) if server.password \
        else _no_credentials
    return session


def _headers(server: Server) -> dict:
    headers = dict(_OCTETS)
    if server.password:
        headers.update(urllib3.util.make_headers(
            basic_auth='%s:%s' % (server.user or '', server.password)))
    return headers


def proxied(server: Server) -> bool:
    """Whether requests would send *server*'s requests through a proxy
    from the environment."""
    proxies = requests.utils.get_environ_proxies(server.url)
    return bool(proxies.get('https' if server.ssl else 'http') or
                proxies.get('all'))


def ca_bundle() -> str:
    """The CA bundle requests verifies with."""
    return (os.environ.get('REQUESTS_CA_BUNDLE') or
            os.environ.get('CURL_CA_BUNDLE') or
            requests.utils.DEFAULT_CA_BUNDLE_PATH)
