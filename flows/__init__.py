"""Prefect flows over the gancore stages: ``gan-pipeline`` (:mod:`flows.pipeline`), ``gan-sweep``
(:mod:`flows.sweep`) and their deployments (:mod:`flows.serve`).

Nothing is imported here, so ``python -m flows.<module>`` loads only what it needs.
"""
