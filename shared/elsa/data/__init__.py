"""elsa.data."""
