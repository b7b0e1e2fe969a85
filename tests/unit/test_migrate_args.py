"""Pure parts of the migration: argument splitting, chunk tiling."""

import re

import pytest

from monasca_persister_dbpt.migrate import cli
from monasca_persister_dbpt.migrate.plan import Chunk, Planner, UNIT_NS
from monasca_persister_dbpt.placement import PlacementMap


@pytest.mark.parametrize('text, pieces', [
    ('^log\\..+', ['^log\\..+']),
    ('a,b', ['a', 'b']),
    ('a{1,3},b', ['a{1,3}', 'b']),
    ('[,;],x', ['[,;]', 'x']),
    ('a\\,b', ['a,b']),
    ('', []),
])
def test_skip_regexes_split_only_on_commas_between_expressions(text, pieces):
    assert cli.split_patterns(text) == pieces
    for piece in pieces:
        re.compile(piece)


def test_retention_arguments_are_checked_not_guessed():
    pm = PlacementMap()
    assert cli.parse_retention('p:2w, q:1', 'd', pm)['q'].hours == 24
    for bad, words in ((':2w', 'has no project'), ('a:1d,a:2d', 'twice'),
                       ('a b:1d', 'tenant id'), ('p', 'is not'),
                       ('p:2x', "retention '2x'")):
        with pytest.raises(cli.UsageError, match=words):
            cli.parse_retention(bad, 'w', pm)


def _planner(chunk_points=10):
    return Planner(lambda q: [], PlacementMap(), 'mon', unit='d',
                   chunk_points=chunk_points, plan_time=100 * UNIT_NS['d'])


def test_chunks_tile_the_range_except_the_units_already_done():
    planner = _planner()
    day = UNIT_NS['d']
    proto = Chunk('autogen', 'm', '_tenant_id', 't', 0, 0, 0,
                  PlacementMap().place('t'))
    units = [(10 * day, 4, False), (11 * day, 4, True), (13 * day, 4, False),
             (14 * day, 8, False)]
    chunks = planner._cut(proto, units, 5 * day, 50 * day)
    bounds = [(c.start // day, c.end // day, c.points) for c in chunks]
    # Before the done unit; after it up to where the next chunk would be
    # too big; the rest to the end of the range.
    assert bounds == [(5, 11, 4), (12, 14, 4), (14, 50, 8)]
    assert [c.units for c in chunks][0] == ((10 * day, 4),)
