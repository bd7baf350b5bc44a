"""Cloud routers."""
