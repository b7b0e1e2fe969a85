"""Database-per-tenant storage for monasca-persister 9.0.0, and its migration."""
