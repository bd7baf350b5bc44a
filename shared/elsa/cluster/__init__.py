"""elsa.cluster."""
