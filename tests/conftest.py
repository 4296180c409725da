"""Test-session set-up: XLA's persistent compilation cache, as every launcher enables it (`vidrl_jax.launch`).

Most of the suite's time is XLA compiling small programs; a program compiled again (the LAPO smoke run's stages and
ablations build the same PPO and stage steps anew, the resume tests rebuild every step) is loaded from the cache.
The cache lives outside the repository (`VIDRL_COMPILATION_CACHE`, default ~/.cache/vidrl_jax/xla; '' turns it off)
and is keyed by the program and XLA's flags, so it changes no result.
"""

from vidrl_jax.launch import enable_compilation_cache

enable_compilation_cache()
