"""Options of the ``[dbpt]`` group: placement, writing, the commit guard
and the per-tenant limits (whose defaults the overrides file overrides).

Everything the host already has (``[influxdb]`` address, database name,
``db_per_tenant``, ``default_retention_hours``, ``batch_size``) is read from
the host's group; only what upstream cannot express lives here.
"""

from oslo_config import cfg

#: Where a down server's points wait by default (see spill_dir).
SPILL_DIR = '/var/lib/monasca-persister-dbpt/spill'

dbpt_group = cfg.OptGroup(
    name='dbpt', title='Database per tenant',
    help='Options of monasca-persister-dbpt. The InfluxDB address, database '
         'name prefix, db_per_tenant, default_retention_hours and batch_size '
         'are read from the [influxdb] group.')

placement_opts = [
    cfg.StrOpt('database_template',
               default='{database_name}_{tenant_id}',
               help='Name of a tenant database when [influxdb] db_per_tenant '
                    'is True. {database_name} is [influxdb] database_name and '
                    '{tenant_id} the tenant (project) id. The default is what '
                    'monasca-api reads with its own db_per_tenant = True.'),
    cfg.StrOpt('tenant_id_pattern',
               default=r'[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}',
               help='Regular expression a tenant id must match as a whole. '
                    'Records of other tenants are rejected and counted, never '
                    'rewritten. Whatever the pattern, ids that cannot name an '
                    'InfluxDB database (empty, ".", "..", slashes, quotes, '
                    'control characters, over 255 bytes) are rejected.'),
    cfg.DictOpt('retention_overrides',
                default={},
                help='Per-tenant retention of the default policy (or '
                     'retention= in tenant_overrides_file, without a '
                     'restart; a tenant in both is refused), in the form '
                     'the migration tool takes: "project:2w,project2:1d". '
                     'Units h, d, w (a bare number is hours), or "inf". The '
                     'policy is named after its duration, like upstream\'s '
                     '"<N>h" for default_retention_hours.'),
    cfg.ListOpt('retention_tiers', default=[],
                help='Downsampled tiers beside the raw data, as '
                     '<interval>:<duration>, e.g. "5m:4w,1h:260w": means of '
                     'value per 5 minutes kept 4 weeks, per hour kept 260 '
                     'weeks. Each tier is a policy tier_<interval> filled by '
                     'a continuous query dbpt_tier_<interval>; both are '
                     'created with every tenant database and reconciled on '
                     'existing ones. Interval units s, m, h, d, w. An '
                     'optional third part is the tier\'s own shard group '
                     'duration ("1h:260w:52w"), since a long tier in short '
                     'shard groups costs influxd one shard per group.'),
    cfg.IntOpt('tier_lateness', default=120, min=0, max=7 * 86400,
               help='Seconds a point may reach InfluxDB after its tier '
                    'interval closed and still be counted in that tier: '
                    'each tier\'s continuous query recomputes the intervals '
                    'that closed within it (RESAMPLE ... FOR). Points reach '
                    'InfluxDB up to max_delay (coalescing) plus the host\'s '
                    '[kafka_metrics] max_wait_time_seconds after they were '
                    'produced; must be at least max_delay. 0: each interval '
                    'once, when it closes.'),
    cfg.BoolOpt('read_tiers', default=True,
                help='For the monasca-api read driver: answer a statistics '
                     'query from the finest tier whose interval divides its '
                     'period when the query starts before the raw policy\'s '
                     'retention (each statistic exact, from the mean, min, '
                     'max, count and sum a tier keeps per interval). No '
                     'effect without tiers.'),
    cfg.MultiStrOpt('tenant_tiers', default=[],
                    help='Per-tenant tiers, one line per project: '
                         '"project=5m:8w,1h:inf"; "project=" for none (or '
                         'tiers= in tenant_overrides_file, without a '
                         'restart; a tenant in both is refused).'),
    cfg.DictOpt('servers', default={},
                help='More InfluxDB servers by name, e.g. '
                     '"influx2:http://10.0.0.2:8086,influx3:https://h3:8086". '
                     'They use [influxdb] user, password and verify_ssl. The '
                     'default server is [influxdb] ip_address/port.'),
    cfg.StrOpt('tenant_overrides_file',
               deprecated_name='tenant_servers_file',
               help='File of per-tenant settings, one tenant per line: the '
                    'tenant id, optionally its server (a name of [dbpt] '
                    'servers), then key=value settings: limits, retention, '
                    'tiers, blocked, e.g. "acme influx2 max_series=20000 '
                    'retention=2w" (# comments; see the operations page of '
                    'the docs for every key). Re-read when it changes, '
                    'without a restart; a bad edit keeps the last good file. '
                    'A tenant moved to another server writes there from '
                    'then on; its older data stays where it was.'),
    cfg.ListOpt('hash_servers', default=[],
                help='Servers (names from [dbpt] servers, or "default") that '
                     'tenants not in tenant_overrides_file are spread over by '
                     'rendezvous (highest random weight) hashing of their '
                     'id; "name:weight" gives a server that many times the '
                     'share ("default,influx2:2"). Adding a server moves '
                     'about 1/(n+1) of these tenants, all to it. Empty: the '
                     'default server.'),
    cfg.IntOpt('replicas', default=1, min=1, max=5,
               help='Servers each tenant database lives on: the first '
                    '"replicas" servers of its rendezvous order over '
                    'hash_servers (which must name at least that many), or '
                    'the servers its line of tenant_overrides_file names '
                    '("acme influx2,influx3"). Every point is written to '
                    'each; monasca-api reads from one that is up and has '
                    'no stale range over the call (see the high '
                    'availability page of the docs). 1: one copy, as '
                    'before.'),
    cfg.FloatOpt('replica_stale_after', default=300.0, min=1.0,
                 max=7 * 86400.0,
                 help='With several replicas: seconds a down replica\'s '
                      'points may be held in memory (when the spill is off '
                      'or full) before they are dropped for that replica '
                      'alone, recorded as a stale range on the other '
                      'replicas, and their records committed, as long as '
                      'another replica stored them. "monasca-persister-'
                      'dbpt-migrate --repair" copies the range back.'),
    cfg.FloatOpt('replica_read_timeout', default=10.0, min=0.1, max=600.0,
                 help='With several replicas, in the monasca-api read '
                      'driver: seconds a replica may take to answer before '
                      'the call goes to the next one (the one that did not '
                      'answer is skipped for a while).'),
    cfg.StrOpt('shard_duration',
               help='Shard group duration of the policies this package '
                    'creates, raw and tiers (for example "1d"; a unit is '
                    'required). A tier may set its own (see retention_tiers). '
                    'Never longer than a policy: a shorter policy gets the '
                    'duration InfluxDB would choose for it. Reconciled on '
                    'existing databases like the duration. Unset: InfluxDB '
                    'chooses from the policy duration.'),
]

writer_opts = [
    cfg.IntOpt('write_concurrency', default=4, min=1, max=64,
               help='Connections (and threads) writing tenants in parallel '
                    'for one persister worker process.'),
    cfg.BoolOpt('write_process', default=True,
                help='Post writes from a child process of the worker, many '
                     'requests to a message, so that they do not wait for '
                     'the interpreter lock behind the host\'s thread (at '
                     'many tenants, most of what a request waits for in the '
                     'worker). A write it cannot store (a refusal, a server '
                     'that does not answer, a child that exited) is written '
                     'again on the worker\'s own path, with every rule of '
                     'that path; a child that exits is started again (after '
                     '3 in a row that never answered, the worker stops '
                     'starting them). Off: the worker\'s threads post every '
                     'write themselves.'),
    cfg.IntOpt('coalesce_points', default=1000, min=1,
               deprecated_name='pipeline_points',
               help='A tenant\'s points are kept across the persister\'s '
                    'flushes and written in one request once there are this '
                    'many (InfluxDB\'s cost is per request much more than '
                    'per point; 1000 is also Telegraf\'s default batch). '
                    'Kafka commits never pass a point not yet written. See '
                    'max_delay and buffered_points_max.'),
    cfg.FloatOpt('max_delay', default=10.0, min=0.0,
                 help='Longest time, in seconds, a tenant\'s oldest point '
                      'waits before it is written, however few points the '
                      'tenant has (a timer sees to it, whatever the '
                      'persister does). 0 turns coalescing off: every '
                      'flush of the persister writes and waits for all its '
                      'points, as upstream does. Coalescing needs the commit '
                      'guard and the default (confluent) Kafka client, and '
                      'turns itself off without them.'),
    cfg.IntOpt('buffered_points_max', default=200000, min=1,
               help='Points one worker process may keep buffered (and '
                    'being written) over all tenants, each point counted '
                    'once whatever its replicas; past it the biggest '
                    'buffers are written at once and the persister waits '
                    'for room. About 250 bytes per point (and 8 more per '
                    'replica beyond the first). See buffered_memory_mb.'),
    cfg.IntOpt('buffered_memory_mb', default=64, min=1, max=1048576,
               help='MiB the buffered points\' lines may take in one worker '
                    'process: the points bound becomes what this holds at '
                    'the mean size of a point, sampled as points are '
                    'buffered, when that is lower than buffered_points_max '
                    '(usual lines of about 165 characters keep the default '
                    'points bound; lines of many or long dimensions lower '
                    'it, up to InfluxDB\'s 64 KiB keys). The worker\'s RSS '
                    'grows by about twice what the lines take.'),
    cfg.FloatOpt('request_timeout', default=30.0, min=0.1,
                 help='Seconds to wait for one InfluxDB HTTP request.'),
    cfg.FloatOpt('retry_timeout', default=120.0, min=0.0,
                 help='How long, in seconds, a write that fails transiently '
                      '(connection refused, timeout, 5xx) is retried with '
                      'backoff before the batch is failed back to the '
                      'persister, which then does not commit it. Keep it '
                      'below the Kafka max.poll.interval.ms (300 s).'),
    cfg.IntOpt('held_points_max', default=200000, min=0,
               help='Points one worker process may hold (of the buffered '
                    'ones) for InfluxDB servers that are down, so that a '
                    'down server delays only its own tenants: their points '
                    'are tried again until it answers, the other tenants '
                    'are written meanwhile, and Kafka commits stop only '
                    'before the held records (a worker that dies meanwhile '
                    'reads them again). Past it the persister waits up to '
                    'retry_timeout, then fails the batch uncommitted. 0: a '
                    'down server fails the whole batch after retry_timeout, '
                    'as upstream does. Needs the commit guard and the '
                    'default (confluent) Kafka client.'),
    cfg.FloatOpt('hold_after', default=5.0, min=0.0,
                 help='Seconds a write to a failing server is retried before '
                      'the server counts as down and its points are held (see '
                      'held_points_max). Later batches hold its points at '
                      'once, until the server answers again.'),
    cfg.StrOpt('spill_dir', default=SPILL_DIR,
               help='Folder where the points of an InfluxDB server that is '
                    'down are appended and fsynced, so that their Kafka '
                    'records are committed and nothing else waits for that '
                    'server however long it is down; they are written to it '
                    'when it answers, in order. Must be on a local disk that '
                    'survives a reboot, writable by the persister. An empty '
                    'value turns the spill off: a down server\'s points '
                    'are then held in memory (held_points_max) and their '
                    'records stay uncommitted. When the default cannot be '
                    'written the spill is off (logged at start); a folder '
                    'set here that cannot be written stops start-up.'),
    cfg.IntOpt('spill_max_bytes', default=10 * 1024 ** 3, min=1024 ** 2,
               help='Bytes one worker process may keep in spill_dir (about '
                    '300 per point). Size it for the longest outage to ride '
                    'out: rate of points to one server x seconds x 300. '
                    'Past it the points are held in memory '
                    '(held_points_max), then the persister waits.'),
    cfg.FloatOpt('retry_backoff_max', default=8.0, min=0.01,
                 help='Longest pause, in seconds, between two retries.'),
    cfg.IntOpt('stats_interval', default=300, min=0,
               help='Seconds between two per-tenant summary lines in the log '
                    '(points written, dropped by reason, databases created). '
                    '0 turns the summary off.'),
    cfg.StrOpt('stats_file',
               help='If set, each worker process also writes its counters as '
                    'JSON to this path (suffixed with its pid) at every '
                    'summary, for scraping without a debugger.'),
]

guard_opts = [
    cfg.BoolOpt('commit_guard', default=True,
                help='Make the host commit Kafka offsets synchronously, only '
                     'for records it has written. monasca-persister 9.0.0 '
                     'otherwise commits asynchronously and can commit records '
                     'that were read but not yet written, which are lost if '
                     'the worker dies. See the reliability page of the docs.'),
    cfg.IntOpt('consume_batch', default=0, min=0, max=100000,
               help='Take up to this many Kafka messages per consume() call '
                    'instead of the host\'s one poll() per message (the same '
                    'messages in the same order, errors, rebalances and the '
                    'commit interval kept; see the architecture page). A '
                    'batch is grouped by tenant at a cost per tenant, so '
                    'about ten times the tenants a worker writes is a good '
                    'size (each then has several records a batch); a call '
                    'never waits for a batch to fill. 0: the host\'s own '
                    'loop.'),
    cfg.IntOpt('fetch_queue_backoff_ms', default=10, min=-1, max=300000,
               help='librdkafka\'s fetch.queue.backoff.ms for the host\'s '
                    'Kafka consumer: how long it waits to fetch again once '
                    'its local queue was full. librdkafka waits 1000 ms, '
                    'and a worker that empties the queue sooner then waits '
                    'in poll() with the broker idle (a fifth of a busy '
                    'worker\'s time; see the benchmarks page). The queue\'s '
                    'own bounds (queued.max.messages.kbytes) are kept. -1: '
                    'the host\'s consumer as it is.'),
    cfg.IntOpt('gc_threshold', default=50000, min=0, max=10000000,
               help='The worker process\'s garbage collector runs its '
                    'youngest generation after this many new objects '
                    '(Python\'s default is 700). Every record parses into a '
                    'few dicts, so with many tenants (many points buffered, '
                    'so many objects alive) the collector\'s full passes '
                    'took up to a quarter of the host thread\'s time (see '
                    'the benchmarks page). What it costs: garbage in reference cycles '
                    'waits longer to be freed, at most this many objects. '
                    '0: the interpreter\'s setting as it is.'),
]

limit_opts = [
    # The names are also the keys of the tenant overrides file.
    cfg.FloatOpt('ingestion_rate', default=0.0, min=0.0,
                 help='Points per second one tenant may send to this '
                      'persister (all its worker processes together: each '
                      'worker allows its share, the rate over [kafka_metrics] '
                      'num_processors). Points beyond it and its burst are '
                      'refused (refused_rate) and committed. 0: no limit.'),
    cfg.IntOpt('ingestion_burst', default=0, min=0,
               help='Points a tenant may send at once above its '
                    'ingestion_rate (the token bucket size, also shared '
                    'by the workers). 0: ten seconds of ingestion_rate.'),
    cfg.IntOpt('max_series', default=0, min=0,
               help='Series one tenant database may hold. A point of a new '
                    'series beyond it is refused (refused_series); existing '
                    'series keep being written. Counted from the database '
                    'itself when a worker first sees the tenant, so a '
                    'restart does not reset it, and again as the cap nears, '
                    'so that several workers and persisters share it (it '
                    'may be passed by a series per other worker: see the '
                    'limits page). '
                    '0: no limit (InfluxDB\'s own max-series-per-database '
                    'still applies, late).'),
    cfg.IntOpt('max_dimensions', default=0, min=0,
               help='Dimensions one metric may carry (refused_dimensions). '
                    '0: no limit, as monasca-api.'),
    cfg.IntOpt('max_name_length', default=255, min=0,
               help='Characters of a metric name (refused_name_length); '
                    '255 is monasca-api\'s own limit. 0: no limit.'),
    cfg.IntOpt('max_dimension_length', default=255, min=0,
               help='Characters of a dimension name or value '
                    '(refused_dimension_length); 255 is monasca-api\'s own '
                    'limit. 0: no limit.'),
    cfg.IntOpt('max_value_meta_bytes', default=2048, min=0,
               help='Bytes of a metric\'s value_meta as JSON '
                    '(refused_value_meta_size); 2048 is monasca-api\'s own '
                    'limit. 0: no limit.'),
    cfg.IntOpt('max_future_seconds', default=0, min=0,
               help='How far, in seconds, a timestamp may lie ahead of this '
                    'host\'s clock (refused_future; Mimir uses 600). Points '
                    'older than their tenant\'s retention policy are always '
                    'refused (refused_too_old), since InfluxDB would drop '
                    'them. 0: no limit on the future.'),
    cfg.StrOpt('prometheus_textfile_dir',
               help='Directory where each worker process writes its counters '
                    '(per tenant and reason) in the Prometheus text format, '
                    'as monasca_persister_dbpt_<pid>.prom, for '
                    'node_exporter\'s textfile collector. Files of workers '
                    'that ended are removed.'),
    cfg.StrOpt('prometheus_address',
               help='host:port of an HTTP endpoint serving the same '
                    'counters, of every worker of this persister, at '
                    '/metrics. One worker serves it (another takes over if '
                    'it ends); the workers share their counters through '
                    'prometheus_textfile_dir (a directory under the system '
                    'temp dir when unset).'),
    cfg.FloatOpt('prometheus_interval', default=15.0, min=1.0,
                 help='Seconds between two updates of the Prometheus '
                      'counters.'),
]

dbpt_opts = placement_opts + writer_opts + guard_opts + limit_opts


def check(conf: cfg.ConfigOpts) -> None:
    """Every option's own bounds (oslo.config checks a value when it is
    first read, which for some is long after start), then the cross-option
    rules oslo.config cannot express."""
    group = conf.dbpt
    for opt in dbpt_opts:
        getattr(group, opt.dest)
    if (group.retention_tiers or group.tenant_tiers) and \
            group.tier_lateness < group.max_delay:
        raise ValueError(
            '[dbpt] tier_lateness (%s s) must be at least [dbpt] max_delay '
            '(%s s): a coalesced point reaches InfluxDB up to max_delay late '
            'and would be left out of its tier' % (group.tier_lateness,
                                                   group.max_delay))
    if group.held_points_max > 0 and group.hold_after >= group.retry_timeout:
        raise ValueError(
            '[dbpt] hold_after (%s s) must be shorter than [dbpt] '
            'retry_timeout (%s s): a down server is noticed after hold_after'
            % (group.hold_after, group.retry_timeout))


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(dbpt_group)
    conf.register_opts(dbpt_opts, dbpt_group)


def list_opts():
    return dbpt_group, dbpt_opts
