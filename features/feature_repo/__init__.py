"""The Feast repository: typed definitions in code, infrastructure in feature_store.yaml templates."""
