"""elsa.sketch."""
