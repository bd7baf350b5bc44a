"""elsa.attacks."""
