"""Datasets: one sequence dataset (`sequence.py`) read from disk without loading it (`store.py`), format readers
for LAPO chunks and AIME/DreamerV2/APV episodes (`formats.py`), the AIME trajectory writer (`trajectories.py`), the
rollout-chunk writer (`collect.py`), ownership markers that keep the project off data it did not write
(`ownership.py`), and the replay buffer (`replay.py`). Nothing here imports `envs/`."""
