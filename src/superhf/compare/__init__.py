"""`superhf compare`: SuperHF beside best-of-n, SFT and TRL's GRPO/RLOO/PPO at equal sampled tokens.

TRL and the PPO environment are optional (`pip install superhf[compare]`); nothing outside
this package imports it.
"""
