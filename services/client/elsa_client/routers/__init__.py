"""Device agent routers."""
