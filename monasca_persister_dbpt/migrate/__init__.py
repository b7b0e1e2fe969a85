"""Migration of a shared Monasca database into per-tenant databases."""
