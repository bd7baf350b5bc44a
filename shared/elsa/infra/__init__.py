"""elsa.infra."""
