"""Token-Supervised Value Model targets (Lee et al. 2024, "Token-Supervised Value Models
for Enhancing Mathematical Problem-Solving Capabilities of Large Language Models").

TVM trains a value model to predict, at every token, the probability that the solution
reaches a correct final answer. Its per-token target is estimated from N sampled solutions
of one problem: for solution i at token j,

    v_ij = |{k ∈ 𝒮(y_i[≤j]) : y_k correct}| / |𝒮(y_i[≤j])|,
    𝒮(p) = the problem's sampled solutions whose first |p| tokens equal p,

the share of correct solutions among those through the same prefix. Once a solution's
prefix is its own (no other sample shares it), v_ij is its own correctness; at the first
token it is the share of solutions that start the same way. Here the samples of one
problem are a run's rollouts of one prompt and one model, and the prefix tree is the exact
one TEMPO uses (`tokenmill.labelers.rewards.reward_math.prefix_values`, vectorised, no
hashing).
"""

from __future__ import annotations

import numpy as np

from tokenmill.labelers.rewards.reward_math import prefix_values


def tvm_targets(token_ids: np.ndarray, lengths: np.ndarray, outcome: np.ndarray, groups: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """(v, paths) per token, flat: the mean `outcome` of the group's rollouts through each
    token's prefix, and how many rollouts that is."""
    return prefix_values(token_ids, lengths, np.asarray(outcome, np.float64), groups)
