"""Search spaces and tuned configuration dictionaries."""
