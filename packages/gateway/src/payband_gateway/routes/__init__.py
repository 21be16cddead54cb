"""One module per resource: predictions (with their outcomes and reviews) and health."""
