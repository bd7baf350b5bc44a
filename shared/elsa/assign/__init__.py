"""elsa.assign."""
