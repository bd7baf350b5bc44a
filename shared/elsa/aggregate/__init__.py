"""elsa.aggregate."""
