"""Cloud workflows."""
