"""elsa.trust."""
