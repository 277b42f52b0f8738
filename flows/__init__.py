"""Prefect flows and the command line: thin wrappers over the stage graph in `augment.graph`.

Importing this package changes nothing: the command line sets Prefect's environment
(flows.settings.apply) before it imports Prefect; deployments set it in prefect.yaml.
"""
