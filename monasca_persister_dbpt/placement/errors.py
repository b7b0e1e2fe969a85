"""What the mapping refuses: three kinds of "no", each with its reason."""

from __future__ import annotations


class InvalidTenantId(ValueError):
    """A tenant id that must not be given a database."""


class InvalidDuration(ValueError):
    """A retention value that is not ``<N>h``, ``<N>d``, ``<N>w`` or ``inf``."""


class InvalidOption(ValueError):
    """An option value refused at start-up; the message names the option."""
