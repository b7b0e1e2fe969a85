#!/usr/bin/env bash
# devstack plugin of monasca-persister-dbpt: installs the package where
# monasca-persister runs and switches the persister and monasca-api to one
# InfluxDB database per tenant. Phases: stack install|post-config|extra,
# unstack, clean.

# Variables come from devstack/settings and devstack itself.
# shellcheck disable=SC2153
_dbpt_xtrace=$(set +o | grep xtrace)
set -o xtrace

METRICS_DRIVER=monasca_persister_dbpt.repositories.metrics:MetricsRepository
ALARMS_DRIVER=monasca_persister_dbpt.repositories.alarm_state_history:AlarmStateHistoryRepository
UPSTREAM_METRICS_DRIVER=monasca_persister.repositories.influxdb.metrics_repository:MetricInfluxdbRepository
UPSTREAM_ALARMS_DRIVER=monasca_persister.repositories.influxdb.alarm_state_history_repository:AlarmStateHistInfluxdbRepository
API_DRIVER=monasca_persister_dbpt.api.metrics_repository:MetricsRepository
UPSTREAM_API_DRIVER=monasca_api.common.repositories.influxdb.metrics_repository:MetricsRepository
# [dbpt] options monasca-api's read driver must agree on with the persister.
DBPT_SHARED_OPTIONS="servers hash_servers database_template tenant_overrides_file retention_overrides retention_tiers tenant_id_pattern"

# Sets [dbpt] <option> in both files when the value is not empty.
function _dbpt_set_both {
    local option=$1 value=$2
    if [[ -n "$value" ]]; then
        iniset "$MONASCA_PERSISTER_CONF" dbpt "$option" "$value"
        iniset "$MONASCA_API_CONF" dbpt "$option" "$value"
    fi
}

function install_monasca_persister_dbpt {
    if [[ -n "$MONASCA_PERSISTER_DBPT_PIP" ]]; then
        "$MONASCA_PERSISTER_DBPT_PIP" install "$MONASCA_PERSISTER_DBPT_DIR"
    else
        setup_develop "$MONASCA_PERSISTER_DBPT_DIR"
    fi
}

function configure_monasca_persister_dbpt {
    local conf=$MONASCA_PERSISTER_CONF
    iniset "$conf" repositories metrics_driver "$METRICS_DRIVER"
    iniset "$conf" repositories alarm_state_history_driver "$ALARMS_DRIVER"
    iniset "$conf" influxdb db_per_tenant True
    iniset "$conf" influxdb default_retention_hours "$MONASCA_PERSISTER_DBPT_RETENTION_HOURS"
    iniset "$conf" dbpt commit_guard "$MONASCA_PERSISTER_DBPT_COMMIT_GUARD"
    # Where a down InfluxDB's points wait (a local disk, the persister's).
    sudo install -d -o "$STACK_USER" -m 0700 "$MONASCA_PERSISTER_DBPT_SPILL_DIR"
    iniset "$conf" dbpt spill_dir "$MONASCA_PERSISTER_DBPT_SPILL_DIR"
    _dbpt_set_both retention_overrides "$MONASCA_PERSISTER_DBPT_RETENTION_OVERRIDES"
    _dbpt_set_both retention_tiers "$MONASCA_PERSISTER_DBPT_RETENTION_TIERS"
    _dbpt_set_both tenant_id_pattern "$MONASCA_PERSISTER_DBPT_TENANT_PATTERN"
    _dbpt_set_both servers "$MONASCA_PERSISTER_DBPT_SERVERS"
    _dbpt_set_both hash_servers "$MONASCA_PERSISTER_DBPT_HASH_SERVERS"
    _dbpt_set_both database_template "$MONASCA_PERSISTER_DBPT_TEMPLATE"
    _dbpt_set_both tenant_overrides_file "$MONASCA_PERSISTER_DBPT_OVERRIDES_FILE"
    # monasca-api's own driver reads one server and the default template:
    # anything else needs our read driver.
    if [[ -n "$MONASCA_PERSISTER_DBPT_SERVERS$MONASCA_PERSISTER_DBPT_TEMPLATE$MONASCA_PERSISTER_DBPT_OVERRIDES_FILE$MONASCA_PERSISTER_DBPT_RETENTION_TIERS" ]]; then
        iniset "$MONASCA_API_CONF" repositories metrics_driver "$API_DRIVER"
        iniset "$MONASCA_API_CONF" influxdb default_retention_hours "$MONASCA_PERSISTER_DBPT_RETENTION_HOURS"
    fi
    iniset "$MONASCA_API_CONF" influxdb db_per_tenant True
}

# The drop-in that raises influxd's open-files limit.
function _dbpt_influxdb_dropin {
    echo "$MONASCA_PERSISTER_DBPT_SYSTEMD_DIR/$MONASCA_PERSISTER_DBPT_INFLUXDB_UNIT.service.d/monasca-persister-dbpt.conf"
}

# One database per tenant means thousands of databases on one influxd, each
# with 8 files open: raise LimitNOFILE of its unit, or say why not.
function raise_influxdb_open_files {
    local limit=$MONASCA_PERSISTER_DBPT_INFLUXDB_NOFILE
    local unit=$MONASCA_PERSISTER_DBPT_INFLUXDB_UNIT
    if [[ "$limit" == "0" ]]; then
        return 0
    fi
    if ! [[ "$limit" =~ ^[1-9][0-9]*$ ]]; then
        die $LINENO "MONASCA_PERSISTER_DBPT_INFLUXDB_NOFILE must be a number of files, not '$limit'"
    fi
    if ! sudo systemctl cat "$unit.service" >/dev/null 2>&1; then
        echo "monasca-persister-dbpt: no systemd unit $unit.service here," \
            "so the open-files limit of influxd is left as it is; raise it" \
            "to $limit where influxd runs (8 files a tenant database)"
        return 0
    fi
    local dropin
    dropin=$(_dbpt_influxdb_dropin)
    sudo install -d -m 0755 "$(dirname "$dropin")"
    printf '[Service]\nLimitNOFILE=%s\n' "$limit" | sudo tee "$dropin" >/dev/null
    sudo systemctl daemon-reload
    sudo systemctl restart "$unit.service"
}

function migrate_monasca_persister_dbpt {
    if [[ "$MONASCA_PERSISTER_DBPT_MIGRATE" != "True" ]]; then
        return 0
    fi
    # shellcheck disable=SC2086
    monasca-persister-dbpt-migrate --config-file "$MONASCA_PERSISTER_CONF" \
        $MONASCA_PERSISTER_DBPT_MIGRATE_ARGS
}

function unconfigure_monasca_persister_dbpt {
    local conf=$MONASCA_PERSISTER_CONF
    if [[ -f "$conf" ]]; then
        iniset "$conf" repositories metrics_driver "$UPSTREAM_METRICS_DRIVER"
        iniset "$conf" repositories alarm_state_history_driver "$UPSTREAM_ALARMS_DRIVER"
        inidelete "$conf" influxdb db_per_tenant
        inidelete "$conf" influxdb default_retention_hours
        inidelete "$conf" dbpt commit_guard
        inidelete "$conf" dbpt spill_dir
    fi
    local option file
    for file in "$conf" "$MONASCA_API_CONF"; do
        if [[ -f "$file" ]]; then
            for option in $DBPT_SHARED_OPTIONS; do
                inidelete "$file" dbpt "$option"
            done
        fi
    done
    if [[ -f "$MONASCA_API_CONF" ]]; then
        inidelete "$MONASCA_API_CONF" influxdb db_per_tenant
        inidelete "$MONASCA_API_CONF" influxdb default_retention_hours
        iniset "$MONASCA_API_CONF" repositories metrics_driver "$UPSTREAM_API_DRIVER"
    fi
}

function lower_influxdb_open_files {
    local dropin
    dropin=$(_dbpt_influxdb_dropin)
    if sudo test -e "$dropin"; then
        sudo rm -f "$dropin"
        sudo systemctl daemon-reload
    fi
}

function uninstall_monasca_persister_dbpt {
    if [[ -n "$MONASCA_PERSISTER_DBPT_PIP" ]]; then
        "$MONASCA_PERSISTER_DBPT_PIP" uninstall -y monasca-persister-dbpt || true
    else
        pip_uninstall monasca-persister-dbpt || true
    fi
}

if [[ "$1" == "stack" ]]; then
    case "$2" in
        install)
            echo_summary "Installing monasca-persister-dbpt"
            install_monasca_persister_dbpt
            ;;
        post-config)
            echo_summary "Configuring monasca-persister-dbpt"
            configure_monasca_persister_dbpt
            raise_influxdb_open_files
            ;;
        extra)
            migrate_monasca_persister_dbpt
            ;;
    esac
fi

if [[ "$1" == "unstack" ]]; then
    unconfigure_monasca_persister_dbpt
fi

if [[ "$1" == "clean" ]]; then
    unconfigure_monasca_persister_dbpt
    lower_influxdb_open_files
    uninstall_monasca_persister_dbpt
fi

$_dbpt_xtrace
