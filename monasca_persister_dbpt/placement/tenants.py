"""Tenant ids and the database names made of them.

Ids are validated and never rewritten: an id that cannot name its own
database is refused, so its points can never land in another tenant's
database. The database template is parsed as a format string and proven
one-to-one when the mapping is built.
"""

from __future__ import annotations

import re
import string

from monasca_persister_dbpt.placement.errors import InvalidOption
from monasca_persister_dbpt.placement.errors import InvalidTenantId

# InfluxDB stores a database as a directory and rejects these outright; quotes
# and whitespace are refused too, since no Keystone project id carries them
# and they only ever come from a hostile or broken producer.
_FORBIDDEN = re.compile(r'[/\\"\'\s\x00-\x1f\x7f-\x9f]')
_MAX_NAME_BYTES = 255

#: Placeholders a database template may hold besides ``{tenant_id}``. Each
#: is fixed for the whole deployment, so the name stays a one-to-one
#: function of the tenant id.
TEMPLATE_PLACEHOLDERS = ('database_name',)
#: Where a rebalance records its moves (see :mod:`.moves`), on each target
#: server.
MOVES_DATABASE = '_dbpt_moves'
#: Where each server keeps its own id (see
#: :mod:`monasca_persister_dbpt.influx.identity`): influxd 1.x has none.
SERVER_ID_DATABASE = '_dbpt_server'
#: Databases no tenant is ever written to: InfluxDB's own, ours, and (added
#: per mapping) the shared database the migration reads from.
#: Stale ranges of replicas (see placement/stale.py).
STALE_DATABASE = '_dbpt_stale'
RESERVED_DATABASES = frozenset({'_internal', MOVES_DATABASE,
                                SERVER_ID_DATABASE, STALE_DATABASE})


def check_database_name(name: str) -> None:
    """Refuse what InfluxDB cannot store as a database directory."""
    if not name or name in ('.', '..'):
        raise InvalidTenantId('database name %r is empty, "." or ".."' % name)
    bad = _FORBIDDEN.search(name)
    if bad:
        raise InvalidTenantId('database name %r contains %r' % (name, bad.group()))
    if not name.isprintable():
        # influxd's meta.ValidName: unicode.IsPrint, the same classes.
        bad = next(c for c in name if not c.isprintable())
        raise InvalidTenantId('database name %r contains the non-printable '
                              'character %r' % (name, bad))
    if len(name.encode('utf-8')) > _MAX_NAME_BYTES:
        raise InvalidTenantId('database name is longer than %d bytes'
                              % _MAX_NAME_BYTES)


def parse_template(template: str, **fixed: str) -> tuple[str, str]:
    """``(prefix, suffix)`` such that a tenant's database is
    ``prefix + tenant_id + suffix``; refuse any template for which that is
    not so.

    The template is parsed as a format string, not searched as text, so
    ``{{tenant_id}}`` (a literal), ``{tenant_id!r}``, ``{tenant_id:.4}`` or
    ``{tenant_id[0]}`` (which would let two tenants share a database) are
    all refused, and so is any placeholder that is not documented.
    """
    def refuse(what: str) -> InvalidOption:
        return InvalidOption('[dbpt] database_template %r: %s' % (template,
                                                                  what))
    try:
        parts = list(string.Formatter().parse(str(template)))
    except ValueError as exc:
        raise refuse('%s (write a literal brace as {{ or }})' % exc) \
            from None
    prefix, suffix, tenant_fields = [], [], 0
    for literal, field, spec, conversion in parts:
        (suffix if tenant_fields else prefix).append(literal)
        if field is None:
            continue
        if conversion or spec:
            raise refuse('{%s%s%s} has a conversion or format spec; only '
                         'plain {tenant_id} and {%s} are allowed' % (
                             field, '!' + conversion if conversion else '',
                             ':' + spec if spec else '',
                             '}, {'.join(TEMPLATE_PLACEHOLDERS)))
        if field == 'tenant_id':
            tenant_fields += 1
            if tenant_fields > 1:
                raise refuse('{tenant_id} appears more than once')
        elif field in TEMPLATE_PLACEHOLDERS:
            (suffix if tenant_fields else prefix).append(fixed[field])
        else:
            raise refuse('unknown placeholder {%s}; the template may hold '
                         'only {tenant_id} (exactly once) and {%s}' % (
                             field, '}, {'.join(TEMPLATE_PLACEHOLDERS)))
    if tenant_fields != 1:
        raise refuse('has no {tenant_id} placeholder: every tenant would '
                     'share one database')
    return ''.join(prefix), ''.join(suffix)



class TenantIds:
    """Which ids get a database, and which database: ``prefix + id +
    suffix``, proven one-to-one by :func:`parse_template`."""

    def __init__(self, database_name: str, template: str,
                 pattern: str) -> None:
        try:
            self._pattern = re.compile(pattern)
        except re.error as exc:
            raise InvalidOption('[dbpt] tenant_id_pattern %r does not '
                                'compile: %s' % (pattern, exc)) from None
        try:
            check_database_name(database_name)
        except InvalidTenantId as exc:
            raise InvalidOption('[influxdb] database_name: %s' % exc) \
                from None
        self.template = template
        self.prefix, self.suffix = parse_template(
            template, database_name=database_name)
        try:
            check_database_name(self.prefix + 'x' + self.suffix)
        except InvalidTenantId as exc:
            raise InvalidOption('[dbpt] database_template %r: %s' % (
                template, exc)) from None
        #: Never a tenant's database: InfluxDB's own and the shared one.
        self.reserved = RESERVED_DATABASES | {database_name}

    @property
    def pattern(self) -> str:
        return self._pattern.pattern

    def validate(self, tenant_id) -> None:
        """Raise InvalidTenantId saying why *tenant_id* gets no database."""
        if not isinstance(tenant_id, str):
            raise InvalidTenantId('tenant id %r is not a string' % (tenant_id,))
        if not tenant_id or tenant_id in ('.', '..'):
            raise InvalidTenantId('tenant id %r is empty, "." or ".."'
                                  % tenant_id)
        bad = _FORBIDDEN.search(tenant_id)
        if bad:
            raise InvalidTenantId('tenant id %r contains %r'
                                  % (tenant_id, bad.group()))
        if not self._pattern.fullmatch(tenant_id):
            raise InvalidTenantId('tenant id %r does not match [dbpt] '
                                  'tenant_id_pattern %r'
                                  % (tenant_id, self._pattern.pattern))

    def database(self, tenant_id: str) -> str:
        return self.prefix + tenant_id + self.suffix

    def tenant_of(self, database: str):
        """The tenant whose database *database* is, or None: the template
        is one-to-one, so the name alone says it."""
        if database in self.reserved or len(database) <= \
                len(self.prefix) + len(self.suffix) or \
                not database.startswith(self.prefix) or \
                not database.endswith(self.suffix):
            return None
        tenant_id = database[len(self.prefix):len(database) -
                             len(self.suffix)]
        try:
            self.validate(tenant_id)
        except InvalidTenantId:
            return None
        return tenant_id if self.database(tenant_id) == database else None

    def checked_database(self, tenant_id: str) -> str:
        """The tenant's database; InvalidTenantId if it cannot be one."""
        database = self.database(tenant_id)
        check_database_name(database)
        if database in self.reserved:
            raise InvalidTenantId(
                'tenant id %r would be written to %r, which is reserved '
                '(InfluxDB\'s own or the shared database)'
                % (tenant_id, database))
        return database
