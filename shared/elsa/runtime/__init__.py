"""elsa.runtime."""
