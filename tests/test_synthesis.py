import numpy as np

from augment.synthesis import gate


def test_gate_keeps_confident_samples_of_the_intended_class():
    probs = np.array([
        [0.9, 0.1],  # intended 0, confident: kept
        [0.6, 0.4],  # intended 1, looks like 0: rejected
        [0.5, 0.5],  # intended 1, exactly at the threshold: kept
    ])
    score, kept, reasons = gate(probs, np.array([0, 1, 1]), min_confidence=0.5)
    assert score.tolist() == [0.9, 0.4, 0.5]
    assert kept.tolist() == [True, False, True]
    assert reasons[0] is None and reasons[2] is None
    assert reasons[1] == "confidence 0.40 < 0.5 (looks like class index 0)"
