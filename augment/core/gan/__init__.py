"""Generators as plug-ins (kinds.Kind, named in augment.registry.GENERATORS), their one training loop, ensembles and sampling."""
