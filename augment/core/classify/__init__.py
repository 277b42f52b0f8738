"""The downstream classifier: its networks, the batched training engine, stacked models and the synthetic side stream."""
