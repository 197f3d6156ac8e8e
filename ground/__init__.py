"""The ground layer: configuration, shared types, errors, atomic writes, the workspace and the
clinical field rules. It imports only the standard library, yaml, numpy and pydantic, and nothing of the
project, so every other package can stand on it."""
