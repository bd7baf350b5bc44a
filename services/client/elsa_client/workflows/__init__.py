"""Device agent workflows."""
