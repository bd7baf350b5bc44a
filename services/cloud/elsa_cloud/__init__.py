"""elsa_cloud service."""
