"""Edge routers."""
