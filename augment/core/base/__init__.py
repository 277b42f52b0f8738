"""Helpers every group may use: device fast paths (accel), tensor conversions, worker pools."""
