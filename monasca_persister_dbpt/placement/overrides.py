"""The tenant overrides file: per-tenant settings, re-read at run time.

One file, one format, one reload path for everything an operator sets per
tenant (Grafana Mimir's runtime configuration is the model): a line is a
tenant id, optionally its server, then ``key=value`` settings::

    # tenant       server    settings
    acme           influx2
    noisy                    ingestion_rate=500 max_series=20000
    big            influx3   max_series=0
    twice          influx2,influx3
    gone                     blocked=true
    archive                  retention=260w tiers=1h:inf

A bare word after the tenant is its server (so a tenant servers file of
earlier releases is a valid overrides file), or several, comma separated:
the servers holding its replicas, the first one first. ``0`` switches a limit off
for that tenant. The file is looked at every ``CHECK_EVERY`` seconds and
re-read when it changed; a bad edit keeps the last good file and logs the
line at fault, while a bad file at start-up is an error naming it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
import time
from typing import Callable, Collection, Mapping, Optional

from monasca_persister_dbpt.placement.errors import InvalidDuration
from monasca_persister_dbpt.placement.errors import InvalidOption
from monasca_persister_dbpt.placement.retention import parse_duration
from monasca_persister_dbpt.placement.retention import parse_tiers

LOG = logging.getLogger(__name__)

#: Seconds between two looks at the file.
CHECK_EVERY = 10.0


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError('must be 0 (no limit) or more')
    return value


def _flag(text: str) -> bool:
    value = text.strip().lower()
    if value in ('true', 'yes', '1', 'on'):
        return True
    if value in ('false', 'no', '0', 'off'):
        return False
    raise ValueError('must be true or false')


def _rate(text: str) -> float:
    value = float(text)
    if not value >= 0 or math.isinf(value):
        raise ValueError('must be a finite number, 0 (no limit) or more')
    return value


#: Every setting a line may carry, with its parser. The limits read them;
#: they are listed here so that every reader of the file (persister,
#: migration, monasca-api driver) accepts and checks the same format.
SETTINGS: Mapping[str, Callable[[str], object]] = {
    'ingestion_rate': _rate,
    'ingestion_burst': _count,
    'max_series': _count,
    'max_dimensions': _count,
    'max_name_length': _count,
    'max_dimension_length': _count,
    'max_value_meta_bytes': _count,
    'max_future_seconds': _count,
    # The tenant's raw (default) policy and its tiers, as
    # [dbpt] retention_overrides and tenant_tiers take them; applied by
    # the persisters without a restart.
    'retention': parse_duration,
    'tiers': parse_tiers,
    # Every new point of the tenant refused (a deleted project: see
    # ``monasca-persister-dbpt-tenants drop``).
    'blocked': _flag,
}


class TenantOverrides:
    """Tenant id -> its server name and settings, from a watched file."""

    def __init__(self, path: Optional[str],
                 servers: Collection[str] = ('default',),
                 option: str = '[dbpt] tenant_overrides_file') -> None:
        self.path = path
        self._servers = frozenset(servers)
        self._option = option
        self._servers_of: dict[str, tuple] = {}
        self._replicated = False
        self._settings: dict[str, dict] = {}
        self._seen = None
        self._next = 0.0
        #: Called with no argument after the file changed.
        self.listeners: list[Callable[[], None]] = []
        #: Called with the settings of a new file before it is taken; an
        #: InvalidOption refuses the file (see :meth:`add_check`).
        self._checks: list[Callable[[Mapping], None]] = []
        if path:
            self.check(force=True)  # a bad file fails at start-up

    def server_of(self, tenant_id: str) -> Optional[str]:
        names = self._servers_of.get(tenant_id)
        return names[0] if names else None

    @property
    def replicated(self) -> bool:
        """Whether a line names several servers."""
        return self._replicated

    def servers_of(self, tenant_id: str) -> Optional[tuple]:
        """The server names of the tenant's line, first one first."""
        return self._servers_of.get(tenant_id)

    def settings_of(self, tenant_id: str) -> Mapping[str, object]:
        return self._settings.get(tenant_id, {})

    def add_check(self, check: Callable[[Mapping], None]) -> None:
        """Refuse any file whose settings *check* raises InvalidOption for:
        the file in force now at once (a start-up error), a later edit as
        a bad edit (the last good file kept)."""
        if self.path:
            try:
                check(self._settings)
            except InvalidOption as exc:
                raise InvalidOption('%s: %s' % (self._option, exc)) from None
        self._checks.append(check)

    def check(self, force: bool = False) -> None:
        """Re-read the file if it changed (at most every CHECK_EVERY s)."""
        now = time.monotonic()
        if not self.path or (now < self._next and not force):
            return
        self._next = now + CHECK_EVERY
        try:
            stat = os.stat(self.path)
            seen = (stat.st_mtime_ns, stat.st_size)
            if seen == self._seen:
                return
            with open(self.path, encoding='utf-8') as handle:
                servers, settings = self._parse(handle)
            for check in self._checks:
                check(settings)
        except (OSError, UnicodeDecodeError, InvalidOption) as exc:
            message = exc if isinstance(exc, InvalidOption) else \
                '%s: %s' % (self.path, exc)
            if self._seen is None:
                raise InvalidOption('%s: %s' % (self._option, message)) \
                    from None
            LOG.error('%s; keeping the last good tenant overrides', message)
            return
        if self._seen is not None:
            LOG.info('tenant overrides file %s changed: %d tenant(s) '
                     'placed, %d with settings', self.path, len(servers),
                     len(settings))
        self._seen = seen
        self._servers_of, self._settings = servers, settings
        self._replicated = any(len(v) > 1 for v in servers.values())
        for listener in self.listeners:
            listener()

    def _parse_text(self, text: str, path: str) -> tuple[dict, dict]:
        """Parse *text* as the file at *path* would be (raises
        InvalidOption naming the line at fault)."""
        self.path = path
        return self._parse(text.splitlines())

    def _parse(self, lines) -> tuple[dict, dict]:
        servers: dict[str, tuple] = {}
        settings: dict[str, dict] = {}
        for number, line in enumerate(lines, 1):
            words = line.split('#', 1)[0].split()
            if not words:
                continue
            tenant, rest = words[0], words[1:]

            def bad(why: str, number=number, line=line) -> InvalidOption:
                return InvalidOption('%s line %d: %r: %s' % (
                    self.path, number, line.strip(), why))
            if tenant in servers or tenant in settings:
                raise bad('tenant %r is already on an earlier line' % tenant)
            if rest and '=' not in rest[0]:
                names = tuple(rest.pop(0).split(','))
                for name in names:
                    if name not in self._servers:
                        raise bad('server %r is not in [dbpt] servers (%s)'
                                  % (name, ', '.join(sorted(self._servers))))
                if len(set(names)) != len(names):
                    raise bad('a server is named twice: each replica needs '
                              'a server of its own')
                servers[tenant] = names
            if not rest and tenant not in servers:
                raise bad('a tenant needs a server or key=value settings')
            values = {}
            for word in rest:
                key, sep, text = word.partition('=')
                parse = SETTINGS.get(key)
                if not sep or parse is None:
                    raise bad('%r is not key=value with a key of %s' % (
                        word, ', '.join(sorted(SETTINGS))))
                if key in values:
                    raise bad('%s is set twice' % key)
                try:
                    values[key] = parse(text)
                except ValueError as exc:
                    raise bad('%s=%r: %s' % (
                        key, text, str(exc) if 'must' in str(exc) or
                        isinstance(exc, InvalidDuration)
                        else 'not a number')) from None
            if values:
                settings[tenant] = values
        return servers, settings


def set_setting(path: str, tenant_id: str, key: str, value: str,
                servers: Collection[str] = ('default',)) -> bool:
    """Set ``key=value`` on *tenant_id*'s line of the overrides file at
    *path* (a new line if it has none); False if it was so already.

    The file is replaced in one rename, and only once the new text parses,
    so a running persister reads either the old file or the new one.
    """
    if key not in SETTINGS:
        raise InvalidOption('%r is not a setting of the tenant overrides '
                            'file (%s)' % (key, ', '.join(sorted(SETTINGS))))
    SETTINGS[key](value)
    try:
        with open(path, encoding='utf-8') as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        lines = []
    word, found, changed = '%s=%s' % (key, value), False, True
    for number, line in enumerate(lines):
        body, hash_, comment = line.partition('#')
        words = body.split()
        if not words or words[0] != tenant_id:
            continue
        found = True
        kept = [w for w in words[1:] if w.partition('=')[0] != key]
        changed = word not in words
        lines[number] = ' '.join([words[0]] + kept + [word]) + \
            (' ' + hash_ + comment if hash_ else '')
    if not found:
        lines.append('%s %s' % (tenant_id, word))
    if not changed:
        return False
    text = '\n'.join(lines) + '\n'
    TenantOverrides(None, servers)._parse_text(text, path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(dir=folder, prefix='.overrides-')
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if os.path.exists(path):
            os.chmod(temporary, os.stat(path).st_mode & 0o7777)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return True
