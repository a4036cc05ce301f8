"""Stage 5, tune: `run` is the stage (recipe/stages/tune/stage.py); the names below are what callers import."""
from recipe.stages.tune.stage import (  # noqa: F401  (the stage and its public names)
    PRESERVE, SHARED_LOCK, Plan, can_reach_top, check_boundary, counted, make_sampler, open_storage, run, run_jobs,
    work)
