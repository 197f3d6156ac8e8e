"""Data: cohorts, the Feast feature repository, data contracts and data versioning."""
