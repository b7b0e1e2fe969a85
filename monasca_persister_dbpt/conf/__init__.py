"""Option registration, one module per group, as in monasca-persister."""

from oslo_config import cfg

from monasca_persister_dbpt.conf import dbpt
from monasca_persister_dbpt.conf import influxdb

CONF = cfg.CONF


def register_opts(conf: cfg.ConfigOpts = CONF) -> None:
    """Register both groups; safe to call more than once."""
    influxdb.register_opts(conf)
    dbpt.register_opts(conf)


def check(conf: cfg.ConfigOpts = CONF) -> None:
    """Refuse option values that contradict each other, naming them; the
    mapping's own options are checked when the mapping is built."""
    dbpt.check(conf)


def list_opts():
    """Our own options, for oslo-config-generator and the docs."""
    return [dbpt.list_opts()]
