"""Evaluation: how a policy is judged, during training and after it.

- `heldout`: held-out prompts answered with the paper's eval sampling, scored by the train and
  test reward models, with METEOR similarity, length and diversity;
- `kl`: the Monte-Carlo KL of a policy to its reference;
- `meteor`: METEOR similarity between answers to different prompts (reward hacking);
- `monitor`: the reward-hacking monitor that watches a run;
- `calibration`, `judge`, `report`: the `superhf calibrate`, `judge` and `report` commands.
"""
