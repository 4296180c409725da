"""Test-session set-up: XLA's persistent compilation cache, as every launcher enables it (`vidrl_jax.launch`).

Most of the suite's time is XLA compiling small programs; a program compiled again (the LAPO smoke run's stages and
ablations build the same PPO and stage steps anew, the resume tests rebuild every step) is loaded from the cache.
The cache lives outside the repository (`VIDRL_COMPILATION_CACHE`, default ~/.cache/vidrl_jax/xla; '' turns it off)
and is keyed by the program and XLA's flags, so it changes no result.
"""

import ast
import os

from vidrl_jax.launch import enable_compilation_cache

enable_compilation_cache()


# Scheduling under pytest-xdist (scripts/test.sh runs one worker per core, at most 4), which changes no result:
# the modules measured slowest on a cold compilation cache start first, so that no long module begins last and
# runs alone; the tests of one module that take one of its module-scoped fixtures (one notebook run, one 2-process
# run) go to one worker together, so that the fixture runs once, and so do all tests of a module that sets
# `ONE_WORKER = True` (its later tests then load the programs its first ones compiled, e.g. the 2-process runs);
# every other test goes to whichever worker is free.
# (xdist's own `--dist loadgroup` marks groups by renaming node ids, which pytest 9.2 no longer allows.)
SLOWEST_FIRST = ("test_notebooks.py::test_rlv", "test_notebooks.py::test_lapo", "test_multihost.py", "test_apv_pipeline.py",
                 "test_aime.py::test_smoke_visual", "test_notebooks.py", "test_aime.py", "test_benchmarks.py",
                 "test_fused.py", "test_rlv_manipulation.py", "test_lapo.py", "test_rlv_pipeline.py",
                 "test_sac_pixels.py", "test_ppo.py", "test_lapo_laom.py", "test_conv_lapo.py")   # file[::test prefix]
TESTS = os.path.dirname(os.path.abspath(__file__))


def pytest_collection_modifyitems(config, items):
  def rank(item):
    name = f"{item.path.name}::{item.name}"
    return next((i for i, p in enumerate(SLOWEST_FIRST) if name.startswith(p if "::" in p else p + "::")),
                len(SLOWEST_FIRST))

  items.sort(key=rank)   # stable: the order within a module is kept


def shared_fixture_users(path: str) -> set[str]:
  """The test functions of a test module whose arguments name one of its module-scoped fixtures, or all of them
  when the module sets `ONE_WORKER = True` (read from the source, as the scheduler sees node ids only)."""
  with open(path) as f:
    tree = ast.parse(f.read())
  functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
  if any(isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "ONE_WORKER" for t in n.targets)
         and getattr(n.value, "value", None) is True for n in tree.body):
    return {f.name for f in functions if f.name.startswith("test")}

  def module_scoped(f):
    return any(isinstance(d, ast.Call) and any(k.arg == "scope" and getattr(k.value, "value", None) == "module"
                                               for k in d.keywords) for d in f.decorator_list)
  fixtures = {f.name for f in functions if module_scoped(f)}
  return {f.name for f in functions if f.name.startswith("test") and fixtures & {a.arg for a in f.args.args}}


def pytest_xdist_make_scheduler(config, log):
  from xdist.scheduler import LoadScopeScheduling

  class SharedFixtureScheduling(LoadScopeScheduling):
    """One work unit per test, except the users of one module-scoped fixture (or a ONE_WORKER module's tests):
    one unit per module."""
    users: dict[str, set[str]] = {}

    def _split_scope(self, nodeid: str) -> str:
      module, _, name = nodeid.partition("::")
      if module not in self.users:
        path = os.path.join(os.path.dirname(TESTS), module)
        self.users[module] = shared_fixture_users(path) if os.path.exists(path) else set()
      return module if name.split("[")[0] in self.users[module] else nodeid

  config.option.loadscopereorder = False   # keep the collection order (slowest modules first)
  return SharedFixtureScheduling(config, log)
