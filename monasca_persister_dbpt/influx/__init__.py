"""The InfluxDB 1.x side: line protocol, InfluxQL quoting, schema, writing."""
