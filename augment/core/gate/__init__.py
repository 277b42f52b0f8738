"""Judging generated samples: the quality gate, its metrics, and generator samples drawn and gated on the fly."""
