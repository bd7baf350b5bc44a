"""elsa_edge service."""
