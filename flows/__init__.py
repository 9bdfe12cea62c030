"""Prefect flows over the gancore stages, installed as ``gancore_flows``: ``gan-pipeline``
(:mod:`.pipeline`), ``gan-sweep`` (:mod:`.sweep`), ``gan-mixture`` (:mod:`.mixture`), ``gan-remedy``
(:mod:`.remedy`), and their deployments (:mod:`.serve`, :mod:`.worker`).

Nothing is imported here, so ``python -m gancore_flows.<module>`` loads only what it needs.
"""
