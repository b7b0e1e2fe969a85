"""Which configured names are one influxd.

InfluxDB 1.x has no server id, and the same server is easily configured
twice (``localhost`` and ``127.0.0.1``, a host name and its address, a
VIP): a rebalance would then copy a database onto itself, verify it
against itself and drop it. So each server is given an id on first
contact: a random one, kept in :data:`DATABASE` (a database no tenant can
map to and monasca-api never reads), and every command that writes or
drops compares the ids of all the names it was configured with before it
does anything.

Two processes meeting a new server at the same moment may both write an
id. Ids are never removed, so a server's ids only grow: two names are one
server when the ids read through them *intersect*, which holds whatever
the order of those first writes (every name is given an id before any is
read). The server's id is the oldest one. A server given its first id
came back without its data only when another server met it by an id it
does not hold: the other id of such a race is not a sign of it.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import time
import uuid
from typing import Mapping, Optional

import requests

from monasca_persister_dbpt.influx.influxql import quote_ident
from monasca_persister_dbpt.placement import InvalidOption, Server
from monasca_persister_dbpt.placement.tenants import SERVER_ID_DATABASE

LOG = logging.getLogger(__name__)

DATABASE = SERVER_ID_DATABASE
MEASUREMENT = 'server'
SELECT_IDS = 'SELECT "id" FROM %s..%s' % (quote_ident(DATABASE),
                                          quote_ident(MEASUREMENT))
#: Where each server keeps the id of every other server it was configured
#: with: a server with no id of its own that another one has met before
#: came back without its data.
PEERS = 'peer'
SELECT_PEERS = 'SELECT "id" FROM %s..%s GROUP BY "url"' % (
    quote_ident(DATABASE), quote_ident(PEERS))


class SameServer(InvalidOption):
    """Two configured names reach one InfluxDB server."""


@dataclasses.dataclass
class Identities:
    """What each configured name answered."""

    #: name -> the server's ids (oldest first); only names that answered.
    ids: dict = dataclasses.field(default_factory=dict)
    #: name -> why it could not be asked.
    unreachable: dict = dataclasses.field(default_factory=dict)
    #: Names given their first id now although another server had met
    #: them before: servers that came back without their data.
    new: list = dataclasses.field(default_factory=list)


def describe(name: str, server: Server) -> str:
    where = '[influxdb] ip_address/port' if name == 'default' else \
        '[dbpt] servers'
    return '%r (%s, %s)' % (name, where, server.url)


def _ids(result: Mapping) -> list:
    return [server_id for _, server_id in _dated_ids(result)]


def _dated_ids(result: Mapping) -> list:
    rows = [v for s in result.get('series') or () for v in s.get('values')
            or ()]
    return [(row[0], row[1]) for row in sorted(rows, key=lambda r: (r[0],
                                                                  r[1]))
            if row[1]]


def peers_of(writer, server: Server, retry_for: float) -> dict:
    """The servers *server* has met (see :data:`PEERS`): URL -> the ids
    it met them by."""
    result = writer.retrying(
        server, 'reading the servers it met',
        lambda: writer.query(server, SELECT_PEERS), retry_for=retry_for,
        fail_fast=False)[0]
    met: dict = {}
    for series in result.get('series') or ():
        url = (series.get('tags') or {}).get('url')
        if url is not None:
            met.setdefault(url, set()).update(
                row[1] for row in series.get('values') or () if row[1])
    return met


def record_peers(writer, servers: Mapping[str, Server], ids: Mapping,
                 retry_for: float) -> None:
    """Tell each server the ids of the others (rewritten, not added to)."""
    for name, server in servers.items():
        lines = ['%s,url=%s id="%s" 0' % (
            PEERS, other.url.replace(',', '\\,').replace(' ', '\\ '),
            ids[other_name][0]) for other_name, other in servers.items()
            if other_name != name and ids.get(other_name)]
        if not lines or not ids.get(name):
            continue
        try:
            writer.retrying(server, 'recording the servers it met',
                            lambda server=server, lines=lines:
                            _post_ids(writer, server, lines),
                            retry_for=retry_for, fail_fast=False)
        except Exception as exc:  # noqa: BLE001 - recorded next start
            LOG.debug('cannot record peers on %s: %s', server.url, exc)


def _post_ids(writer, server: Server, lines) -> None:
    response = writer.session(server).post(
        server.url + '/write', params={'db': DATABASE, 'precision': 'ns'},
        data='\n'.join(lines).encode('utf-8'), timeout=30)
    if response.status_code >= 500:
        raise requests.ConnectionError('HTTP %d %s' % (
            response.status_code, response.text[:200]))


def read_ids(writer, server: Server, retry_for: float) -> list:
    """The ids *server* holds, oldest first ([] when it has none yet)."""
    result = writer.retrying(
        server, 'reading its server id',
        lambda: writer.query(server, SELECT_IDS), retry_for=retry_for,
        fail_fast=False)[0]
    if 'error' in result:
        if 'not found' in result['error']:
            return []
        raise InvalidOption('InfluxDB at %s: reading its server id: %s'
                            % (server.url, result['error']))
    return _ids(result)


def ensure_id(writer, server: Server, retry_for: float) -> bool:
    """Give *server* an id unless it has one; True if it had none."""
    if read_ids(writer, server, retry_for):
        return False
    writer.retrying(server, 'creating its server id', lambda: writer.query(
        server, 'CREATE DATABASE %s' % quote_ident(DATABASE)),
        retry_for=retry_for, fail_fast=False)
    line = '%s id="%s" %d' % (MEASUREMENT, uuid.uuid4().hex, time.time_ns())

    def post():
        response = writer.session(server).post(
            server.url + '/write', params={'db': DATABASE, 'precision': 'ns'},
            data=line.encode('utf-8'), timeout=30)
        if response.status_code >= 500:
            raise requests.ConnectionError('HTTP %d %s' % (
                response.status_code, response.text[:200]))
        if response.status_code != 204:
            raise InvalidOption('InfluxDB at %s refused its server id: HTTP '
                                '%d %s' % (server.url, response.status_code,
                                           response.text[:200]))
    writer.retrying(server, 'writing its server id', post,
                    retry_for=retry_for, fail_fast=False)
    LOG.info('InfluxDB at %s: new server id written to %s', server.url,
             DATABASE)
    return True


def identify(writer, servers: Mapping[str, Server], *, create: bool = True,
             retry_for: float = 10.0) -> Identities:
    """Ask every configured server for its id; raise :class:`SameServer`
    naming both names when two of them are one influxd.

    A server that does not answer within *retry_for* is left out (listed
    in ``unreachable``): what needs it fails on its own later. With
    *create* False (a dry run, a reader) nothing is written, and a server
    without an id yet is compared by its URL alone.
    """
    found = Identities()
    if len(servers) < 2:
        return found  # nothing to tell apart: nothing asked, nothing written
    by_url: dict = {}
    for name, server in sorted(servers.items()):
        other = by_url.setdefault(server.url, name)
        if other != name:
            raise SameServer('%s and %s name the same server'
                             % (describe(other, servers[other]),
                                describe(name, server)))
    names = sorted(servers)

    def first(name):
        return ensure_id(writer, servers[name], retry_for) if create \
            else False

    def second(name):
        return read_ids(writer, servers[name], retry_for)
    with concurrent.futures.ThreadPoolExecutor(min(8, len(names)) or 1) as \
            pool:
        # Every name gets its id before any is read (see the module doc).
        failed = {}
        created = []
        for name, future in [(n, pool.submit(first, n)) for n in names]:
            try:
                if future.result():
                    created.append(name)
            except InvalidOption:
                raise
            except Exception as exc:  # noqa: BLE001 - reported per server
                failed[name] = str(exc)[:300]
        for name, future in [(n, pool.submit(second, n)) for n in names
                             if n not in failed]:
            try:
                found.ids[name] = future.result()
            except InvalidOption:
                raise
            except Exception as exc:  # noqa: BLE001 - reported per server
                failed[name] = str(exc)[:300]
    found.unreachable = failed
    if created and create:
        # Given an id now, but met before by another server: back empty.
        others = [n for n in names if n not in created and n not in failed]
        met: dict = {}
        for name in others:
            try:
                for url, ids in peers_of(writer, servers[name],
                                         retry_for).items():
                    met.setdefault(url, set()).update(ids)
            except Exception:  # noqa: BLE001 - not known: not claimed
                continue
        found.new = [n for n in created if _met_by_another_id(
            writer, servers[n], met.get(servers[n].url), retry_for)]
    if create:
        record_peers(writer, servers, found.ids, retry_for)
    seen: dict = {}
    for name in names:
        for server_id in found.ids.get(name, ()):
            other = seen.setdefault(server_id, name)
            if other != name:
                raise SameServer(
                    '%s and %s are one InfluxDB server (server id %s in its '
                    'database %s): name each server once (if one was '
                    'restored from a copy of the other\'s data, run DROP '
                    'DATABASE %s on that one)' % (
                        describe(other, servers[other]),
                        describe(name, servers[name]), server_id,
                        quote_ident(DATABASE), quote_ident(DATABASE)))
    for name, why in sorted(failed.items()):
        LOG.warning('InfluxDB %s does not answer (%s): cannot tell whether '
                    'it is one of the other configured servers yet',
                    describe(name, servers[name]), why)
    return found


def _met_by_another_id(writer, server: Server, met: Optional[set],
                       retry_for: float) -> bool:
    """Whether another server met *server* by an id it no longer holds.

    Another process meeting the same new server at the same moment writes
    an id of its own and records it as a peer: that id is the server's
    too, so it is no sign of lost data. Its ids are read again, after the
    peers were: an id recorded as a peer was written before the record.
    """
    if not met:
        return False
    try:
        held = set(read_ids(writer, server, retry_for))
    except Exception:  # noqa: BLE001 - not known: not claimed
        return False
    return not met & held


def distinct(writer, a: Server, b: Server,
             retry_for: float = 10.0) -> Optional[str]:
    """None when *a* and *b* are proven two influxd now (asked again, not
    cached: the last check before something is dropped), else why not."""
    if a.url == b.url:
        return '%s is named twice' % a.url
    ids_a = read_ids(writer, a, retry_for)
    ids_b = read_ids(writer, b, retry_for)
    if not ids_a or not ids_b:
        return 'InfluxDB at %s has no server id' % (
            a.url if not ids_a else b.url)
    if set(ids_a) & set(ids_b):
        return '%s and %s are one InfluxDB server (server id %s)' % (
            a.url, b.url, ids_a[0])
    return None
