"""Prefect flows: thin orchestration over embedding/, features/, training/ and serving/.

Nothing imports this package; it is entered through `facesurv flows ...`, Prefect
deployments, or `python -m flows.stages` (the DVC pipeline).
"""
