"""The host's ``[influxdb]`` group, reused rather than redefined.

Inside the persister these options already exist; registering the host's own
option objects again is a no-op. The migration tool may run where only the
persister's config file is present, so a mirror of the host's definitions
(same names, types and defaults as monasca-persister 9.0.0) stands in when the
host package cannot be imported.
"""

from oslo_config import cfg

try:
    from monasca_persister.conf import influxdb as _host
except ImportError:  # pragma: no cover - the host is installed in every test env
    _host = None

if _host is not None:
    influxdb_group = _host.influxdb_group
    influxdb_opts = _host.influxdb_opts
else:  # pragma: no cover
    influxdb_group = cfg.OptGroup(name='influxdb', title='influxdb')
    influxdb_opts = [
        cfg.StrOpt('database_name', default='mon',
                   help='database name where metrics are stored'),
        cfg.BoolOpt('db_per_tenant', default=False,
                    help='Whether to use a separate database per tenant'),
        cfg.IntOpt('default_retention_hours', default=0,
                   help='Default retention period in hours for new '
                        'databases automatically created by the persister'),
        cfg.IntOpt('batch_size', default=10000,
                   help='Maximum size of the batch to write to the database.'),
        cfg.HostAddressOpt('ip_address',
                           help='Valid IP address or hostname to InfluxDB '
                                'instance'),
        cfg.PortOpt('port', default=8086, help='port to influxdb'),
        cfg.BoolOpt('ssl', default=False, help='Boolean'),
        cfg.BoolOpt('verify_ssl', default=False, help='Boolean'),
        cfg.StrOpt('user', default='mon_persister', help='influxdb user '),
        cfg.StrOpt('password', secret=True, help='influxdb password'),
    ]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(influxdb_group)
    for opt in influxdb_opts:
        try:
            conf.register_opt(opt, influxdb_group)
        except cfg.DuplicateOptError:
            # Same name registered by the host with another object: the
            # host's definition wins, ours only reads its value.
            pass
