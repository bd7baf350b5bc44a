"""elsa.perturb."""
