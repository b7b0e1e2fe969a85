"""One monasca-api query over several servers: bound it, merge the answers.

While a tenant moves (see :mod:`monasca_persister_dbpt.placement.moves`)
each server answers for its own time range: the query monasca-api built is
given that range (:func:`bound`) and the answers are merged as the one
server holding everything would have answered (:func:`merge`):

- ``show ...``: the union of the rows, then monasca-api's ``limit`` and
  ``offset`` (asked of no single server);
- statistics: each server is asked for min, max, count and sum per period
  (periods align to the epoch on every server); the period that straddles
  the split is combined, the mean is sum over count; points the old copy
  holds from the split on and the new one lacks yet (written there by a
  persister still on the old map) are added to their periods
  (:func:`stragglers`), so statistics count every point a listing shows;
- other selects: the rows of a series in time order, identical rows once,
  then the ``limit``.

Only the shapes of query monasca-api 11.0.0 builds are handled; anything
else is sent to the tenant's own server alone.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

#: A statistic as monasca-api writes it -> the column InfluxDB names it.
STAT_COLUMNS = {'mean(value)': 'mean', 'min(value)': 'min',
                'max(value)': 'max', 'count(value)': 'count',
                'sum(value)': 'sum'}
#: What each server is asked instead, from raw points or from a tier.
PARTIAL_RAW = ('min(value) AS "min", max(value) AS "max", '
               'count(value) AS "count", sum(value) AS "sum"')
PARTIAL_TIER = ('min("min") AS "min", max("max") AS "max", '
                'sum("count") AS "count", sum("sum") AS "sum"')
_KEYWORDS = re.compile(r'\s(group\s+by|order\s+by|limit|slimit|offset|'
                       r'soffset)\s', re.I)
_PAGING = re.compile(r'\s+(limit|offset)\s+(\d+)(?=\s|$)', re.I)
_SLIMIT = re.compile(r'\sslimit\s+(\d+)(?=\s|$)', re.I)


def _mask(query: str) -> str:
    """*query* with what is inside '...', "..." and /regex/ replaced by
    ``x`` (same length), so that keywords are found only where they are
    keywords."""
    out = []
    quote = None
    escaped = False
    last = ''
    for char in query:
        if quote:
            if escaped:
                escaped = False
            elif char == '\\':
                escaped = True
            elif char == quote:
                quote = None
                out.append(char)
                continue
            out.append('x')
            continue
        if char in '\'"' or (char == '/' and last in ('=~', '!~')):
            quote = char
        out.append(char)
        if not char.isspace():
            last = (last + char)[-2:]
    return ''.join(out)


def _clause_end(query: str) -> int:
    """Where the where clause of *query* ends (before group by, limit...)."""
    found = _KEYWORDS.search(_mask(query) + ' ')
    return found.start() if found else len(query.rstrip())


def bound(query: str, lower: Optional[int], upper: Optional[int]) -> str:
    """*query* restricted to ``lower <= time < upper`` (ns; None: open)."""
    terms = []
    if lower is not None:
        terms.append('time >= %d' % lower)
    if upper is not None:
        terms.append('time < %d' % upper)
    if not terms:
        return query
    end = _clause_end(query)
    has_where = re.search(r'\swhere\s', _mask(query[:end]) + ' ', re.I)
    joiner = ' and ' if has_where else ' where '
    return query[:end] + joiner + ' and '.join(terms) + ' ' + query[end:]


def strip_paging(query: str) -> tuple[str, Optional[int], int]:
    """A ``show`` query without its limit and offset, and those."""
    limit, offset = None, 0
    end = _clause_end(query)
    tail = query[end:]
    for found in _PAGING.finditer(tail):
        if found.group(1).lower() == 'limit':
            limit = int(found.group(2))
        else:
            offset = int(found.group(2))
    return query[:end] + _PAGING.sub(' ', tail), limit, offset


def limit_of(query: str) -> Optional[int]:
    """The ``limit`` (rows per series) of a select, or None."""
    for found in _PAGING.finditer(query[_clause_end(query):]):
        if found.group(1).lower() == 'limit':
            return int(found.group(2))
    return None


def slimit_of(query: str) -> Optional[int]:
    """The ``slimit`` (series) of a select, or None."""
    found = _SLIMIT.search(_mask(query)[_clause_end(query):])
    return int(found.group(1)) if found else None


def time_key(value) -> tuple:
    """A sort key for InfluxDB's times: epoch numbers, or RFC 3339 with
    however many fraction digits (which do not sort as text)."""
    if not isinstance(value, str):
        return ('', value)
    base, _, rest = value.partition('.')
    fraction = rest.rstrip('Z') if rest else ''
    return (base.rstrip('Z'), fraction.ljust(9, '0'))


def _key(series: dict) -> tuple:
    return (series.get('name', ''),
            tuple(sorted((series.get('tags') or {}).items())))


def _group(answers: Sequence[dict]) -> dict:
    grouped: dict = {}
    for answer in answers:
        for series in (answer or {}).get('series') or ():
            entry = grouped.setdefault(_key(series), {
                'series': dict(series, values=[]), 'rows': []})
            entry['rows'].extend(series.get('values') or ())
    return grouped


def _out(grouped: dict, rows_of, slimit: Optional[int] = None) -> dict:
    series = []
    for key in sorted(grouped)[:slimit]:
        rows = rows_of(grouped[key])
        if rows:
            series.append(dict(grouped[key]['series'], values=rows))
    return {'statement_id': 0, 'series': series} if series else \
        {'statement_id': 0}


def merge_show(answers: Sequence[dict], limit: Optional[int],
               offset: int) -> dict:
    def rows(entry):
        unique = sorted({tuple(r) for r in entry['rows']},
                        key=lambda r: tuple(str(v) for v in r))
        unique = unique[offset:]
        return [list(r) for r in
                (unique[:limit] if limit is not None else unique)]
    return _out(_group(answers), rows)


def merge_rows(answers: Sequence[dict], limit: Optional[int],
               slimit: Optional[int] = None) -> dict:
    def rows(entry):
        seen, out = set(), []
        for row in sorted(entry['rows'], key=lambda r: time_key(r[0])):
            key = tuple(str(v) for v in row)
            if key not in seen:
                seen.add(key)
                out.append(row)
        return out[:limit] if limit is not None else out
    return _out(_group(answers), rows, slimit)


def merge_statistics(answers: Sequence[dict], statistics: Sequence[str],
                     limit: Optional[int], slimit: Optional[int] = None
                     ) -> dict:
    """Combine per-server (min, max, count, sum) periods into
    *statistics* (InfluxDB's column names: mean, min, max, count, sum)."""
    grouped: dict = {}
    for answer in answers:
        for series in (answer or {}).get('series') or ():
            entry = grouped.setdefault(_key(series), {
                'series': dict(series, values=[],
                               columns=['time'] + list(statistics)),
                'rows': []})
            columns = series['columns']
            entry['rows'].extend(dict(zip(columns, r))
                                 for r in series.get('values') or ())

    def rows(entry):
        periods: dict = {}
        for values in entry['rows']:
            if not values.get('count'):
                continue
            have = periods.get(values['time'])
            if have is None:
                periods[values['time']] = dict(values)
                continue
            have['min'] = min(have['min'], values['min'])
            have['max'] = max(have['max'], values['max'])
            have['count'] += values['count']
            have['sum'] += values['sum']
        out = []
        for t in sorted(periods, key=time_key):
            period = periods[t]
            period['mean'] = period['sum'] / period['count']
            out.append([t] + [period[name] for name in statistics])
        return out[:limit] if limit is not None else out
    return _out(grouped, rows, slimit)


_GROUP_BY = re.compile(r'\sgroup\s+by\s+(?P<items>.*?)time\(', re.I | re.S)


def grouping(query: str):
    """The tags a statistics query groups by before ``time(...)``: None
    for none, ``'*'`` for all of them, else a list of names."""
    found = _GROUP_BY.search(_mask(query), _clause_end(query))
    if found is None:
        return None
    items = query[found.start('items'):found.end('items')]
    names = [i.strip() for i in items.split(',') if i.strip()]
    if not names:
        return None
    if '*' in names:
        return '*'
    return [n[1:-1].replace('\\"', '"') if n.startswith('"') else n
            for n in names]


def _rfc3339(ns: int) -> str:
    import datetime
    seconds = ns // 1_000_000_000
    return (datetime.datetime(1970, 1, 1) + datetime.timedelta(
        seconds=seconds)).strftime('%Y-%m-%dT%H:%M:%SZ')


def point_keys(answer: dict) -> set:
    """``(name, tags, time)`` of every row of a raw ``group by *`` answer
    (epoch times)."""
    return {(s.get('name', ''), tuple(sorted((s.get('tags') or {}).items())),
             row[0])
            for s in (answer or {}).get('series') or ()
            for row in s.get('values') or ()}


def stragglers(old: dict, new_keys: set, group_by, period: int) -> dict:
    """The rows of *old* (a raw ``select value ... group by *`` answer in
    epoch ns) that *new_keys* (:func:`point_keys` of the new server) does
    not hold, as one server's (min, max, count, sum) per period, grouped
    as the statistics query groups them."""
    step = period * 1_000_000_000
    periods: dict = {}
    for series in (old or {}).get('series') or ():
        tags = series.get('tags') or {}
        key_tags = tuple(sorted(tags.items()))
        if group_by is None:
            out_tags: tuple = ()
        elif group_by == '*':
            out_tags = key_tags
        else:
            out_tags = tuple(sorted((k, tags.get(k, '')) for k in group_by))
        column = series['columns'].index('value')
        for row in series.get('values') or ():
            value = row[column]
            if value is None or isinstance(value, (str, bool)) or \
                    (series.get('name', ''), key_tags, row[0]) in new_keys:
                continue
            bucket = row[0] - row[0] % step
            have = periods.setdefault((series.get('name', ''), out_tags),
                                      {}).get(bucket)
            if have is None:
                periods[(series.get('name', ''), out_tags)][bucket] = \
                    [value, value, 1, value]
            else:
                have[0] = min(have[0], value)
                have[1] = max(have[1], value)
                have[2] += 1
                have[3] += value
    out = []
    for (name, tags), buckets in sorted(periods.items()):
        entry = {'name': name, 'columns': ['time', 'min', 'max', 'count',
                                           'sum'],
                 'values': [[_rfc3339(t)] + v
                            for t, v in sorted(buckets.items())]}
        if group_by is not None:
            entry['tags'] = dict(tags)
        out.append(entry)
    return {'series': out} if out else {}


_LOWER = re.compile(r'\stime\s*>=\s*(-?\d+)u', re.I)
_UPPER = re.compile(r'\stime\s*<=?\s*(-?\d+)u', re.I)


def time_range(query: str) -> tuple[Optional[int], Optional[int]]:
    """The ``time >= <us>u`` and ``time < <us>u`` bounds monasca-api puts
    in a query, in ns (None: unbounded on that side)."""
    masked = _mask(query)
    lower = _LOWER.search(masked)
    upper = _UPPER.search(masked)
    return (int(lower.group(1)) * 1000 if lower else None,
            int(upper.group(1)) * 1000 if upper else None)
