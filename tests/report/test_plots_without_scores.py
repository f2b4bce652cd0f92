"""ROC curves of a method without any score (entropy of vLLM rollouts; issue 18)."""

import numpy as np

from tokenmill.report.plots import roc_curve


def test_roc_curve_of_scores_that_are_all_null_is_the_origin_alone():
    fpr, tpr = roc_curve(np.full(4, np.nan), np.array([0, 1, 0, 1]))
    assert fpr.tolist() == [0.0] and tpr.tolist() == [0.0]
    fpr, tpr = roc_curve(np.zeros(0), np.zeros(0))
    assert fpr.tolist() == [0.0] and tpr.tolist() == [0.0]
