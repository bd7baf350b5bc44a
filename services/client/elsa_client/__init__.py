"""elsa_client service."""
