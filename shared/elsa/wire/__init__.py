"""elsa.wire."""
