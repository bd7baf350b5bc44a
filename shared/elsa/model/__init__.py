"""elsa.model."""
