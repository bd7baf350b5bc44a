"""Edge workflows."""
