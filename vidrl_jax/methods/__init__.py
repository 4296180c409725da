"""One sub-package per paper; each binds the shared pieces (nets, losses, envs, data, loop) to its algorithm."""
