"""The shared training loop, mesh helpers, checkpoints and metric logging."""

from vidrl_jax.train.logger import MetricWriter, check_finite, write_results
from vidrl_jax.train.loop import Task, loop_config, run, stage_finished, stage_rng

__all__ = ["MetricWriter", "Task", "check_finite", "loop_config", "run", "stage_finished", "stage_rng", "write_results"]
