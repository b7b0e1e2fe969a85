"""Line protocol for the hot path, compatible with monasca-persister.

influxdb-python's ``make_lines`` is general but slow per point, so the
escaping here is written out: measurement, tag keys and tag values escape
space, ``,`` and ``=``; string fields escape ``\\``, ``"`` and newline, as
the host does. One deliberate difference: the host also doubles every
backslash in names, but InfluxDB 1.x never unescapes ``\\\\`` there, so the
host stores ``a\\\\b`` for ``a\\b`` and monasca-api cannot find it; we write
backslashes as they are. On top, the checks the host lacks: the line
protocol cannot carry a control character in a name, a name ending in a
backslash, a measurement starting with ``#`` (a comment line) or mixing a
backslash with escaped characters, an
empty tag value or the tag key ``time``, and such a record is refused with
a reason instead of failing the whole request.
"""

from __future__ import annotations

import math
import re

# InfluxDB limits a series key (measurement plus tags) to 65535 bytes.
MAX_KEY_BYTES = 65535
# Timestamps InfluxDB can store, in milliseconds (int64 nanoseconds).
MIN_TIME_MS = -9223372036854
MAX_TIME_MS = 9223372036854

_CONTROL = re.compile(r'[\x00-\x1f\x7f]')
_NAME_SPECIAL = re.compile(r'[ ,=]')
_CACHE_LIMIT = 200000
_escaped: dict[str, str] = {}
_measurements: dict[str, str] = {}
_MEASUREMENT_GARBLED = re.compile(r'[ ,="]')


class InvalidPoint(ValueError):
    """A value the line protocol cannot carry; the message names it."""


def escape_name(text: str, what: str = 'name') -> str:
    """Escape a measurement, tag key or tag value; refuse what cannot be sent.

    Results are cached: dimension names and values repeat across records, and
    a dict hit is several times cheaper than the checks.
    """
    escaped = _escaped.get(text)
    if escaped is not None:
        return escaped
    if not isinstance(text, str):
        raise InvalidPoint('%s %r is not a string' % (what, text))
    if not text:
        raise InvalidPoint('%s is empty' % what)
    bad = _CONTROL.search(text)
    if bad:
        raise InvalidPoint('%s %r contains the control character %r'
                           % (what, text[:80], bad.group()))
    if text[-1] == '\\':
        raise InvalidPoint('%s %r ends with a backslash, which the line '
                           'protocol cannot carry' % (what, text[:80]))
    if _NAME_SPECIAL.search(text):
        escaped = (text.replace(' ', '\\ ').replace(',', '\\,')
                   .replace('=', '\\='))
    else:
        escaped = text
    if len(_escaped) >= _CACHE_LIMIT:
        _escaped.clear()
    _escaped[text] = escaped
    return escaped


def escape_measurement(text: str) -> str:
    """Escape a measurement name like a tag, refusing what 1.x garbles.

    InfluxDB 1.x unescapes measurement names irregularly once a backslash
    meets an escaped character (``a\\\\"z`` is stored as ``a"z``), so a name
    holding both a backslash and a space, comma, ``=`` or ``"`` cannot be
    stored as sent and is refused.
    """
    escaped = _measurements.get(text)
    if escaped is None:
        escaped = escape_name(text, 'measurement')
        if text[0] == '#':
            # A line starting with "#" is a comment: InfluxDB would answer
            # 204 and store nothing. "\\#" is kept literally, so refuse.
            raise InvalidPoint('measurement %r starts with "#", which makes '
                               'the line a comment InfluxDB ignores'
                               % text[:80])
        if '\\' in text and _MEASUREMENT_GARBLED.search(text):
            raise InvalidPoint(
                'measurement %r has a backslash together with a space, '
                'comma, "=" or quote, which InfluxDB 1.x does not store as '
                'sent' % text[:80])
        if len(_measurements) >= _CACHE_LIMIT:
            _measurements.clear()
        _measurements[text] = escaped
    return escaped


def escape_string_field(text: str) -> str:
    """Quote a string field value exactly as the host does."""
    return '"%s"' % (str(text).replace('\\', '\\\\').replace('"', '\\"')
                     .replace('\n', '\\n'))


def format_value(value) -> str:
    """A float field as the host writes it (``str(float(v))``), finite only.

    Whatever the host's ``float()`` takes, we take: booleans (1.0 and 0.0,
    as monasca-api returns them), integers, and numeric strings. A value
    that is not finite is refused: influxd refuses ``nan`` and ``inf``.
    """
    kind = type(value)
    if kind is float:
        number = value
    elif kind is int or kind is bool or kind is str:
        try:
            number = float(value)
        except OverflowError:
            raise InvalidPoint('value %.40s... is out of the range of a '
                               'float' % value) from None
        except ValueError:
            raise InvalidPoint('value %r is not a number' % (value[:80],)) \
                from None
    else:
        raise InvalidPoint('value %r is not a number' % (value,))
    if not math.isfinite(number):
        raise InvalidPoint('value %r is not finite' % (value,))
    return repr(number)


def format_time_ms(timestamp) -> str:
    """An integer millisecond timestamp within InfluxDB's range.

    As the host's ``int()``: a float is truncated, a string of an integer
    read, a boolean is 0 or 1.
    """
    kind = type(timestamp)
    if kind is int:
        ms = timestamp
    elif kind is float and math.isfinite(timestamp):
        ms = int(timestamp)
    elif kind is bool or kind is str:
        try:
            ms = int(timestamp)
        except ValueError:
            raise InvalidPoint('timestamp %r is not a whole number of '
                               'milliseconds' % (timestamp[:80],)) from None
    else:
        raise InvalidPoint('timestamp %r is not a number of milliseconds'
                           % (timestamp,))
    if not MIN_TIME_MS < ms < MAX_TIME_MS:
        raise InvalidPoint('timestamp %r is outside the range InfluxDB '
                           'stores (years 1677 to 2262)' % (timestamp,))
    return str(ms)


def series_key(measurement: str, tags: dict) -> str:
    """``measurement,k=v,...`` with tags sorted, as the host sends them."""
    parts = [escape_measurement(measurement)]
    for key in sorted(tags):
        if key == 'time':
            raise InvalidPoint('tag key "time" is refused by InfluxDB')
        parts.append('%s=%s' % (escape_name(key, 'tag key'),
                                escape_name(tags[key], 'value of tag %r'
                                            % (key,))))
    key = ','.join(parts)
    if len(key) > MAX_KEY_BYTES // 4 and \
            len(key.encode('utf-8')) > MAX_KEY_BYTES:
        raise InvalidPoint('series key of %r is longer than %d bytes'
                           % (measurement[:80], MAX_KEY_BYTES))
    return key


def parse_series_key(key: str) -> tuple[str, dict]:
    """InfluxDB's ``SHOW SERIES`` key -> (measurement, tags), unescaped, so
    that :func:`series_key` of the result is what we would have sent."""
    parts: list[list[str]] = [[]]
    current: list[str] = []
    i, n = 0, len(key)
    while i < n:
        char = key[i]
        if char == '\\' and i + 1 < n and key[i + 1] in ' ,=':
            current.append(key[i + 1])
            i += 2
            continue
        if char == ',':
            parts[-1].append(''.join(current))
            parts.append([])
            current = []
        elif char == '=' and len(parts) > 1 and len(parts[-1]) == 0:
            parts[-1].append(''.join(current))
            current = []
        else:
            current.append(char)
        i += 1
    parts[-1].append(''.join(current))
    measurement = parts[0][0]
    tags = {}
    for pair in parts[1:]:
        if len(pair) != 2:
            raise ValueError('not a series key: %r' % key[:200])
        tags[pair[0]] = pair[1]
    return measurement, tags
