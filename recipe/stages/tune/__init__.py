"""Stage 5, tune: `run` is the stage (tune/stage.py); the other names are what callers and scripts import."""
from recipe.stages.tune.checks import check_boundary  # noqa: F401
from recipe.stages.tune.jobs import run_jobs  # noqa: F401
from recipe.stages.tune.objective import can_reach_top  # noqa: F401
from recipe.stages.tune.recovery import counted  # noqa: F401
from recipe.stages.tune.samplers import make_sampler  # noqa: F401
from recipe.stages.tune.stage import PRESERVE, SHARED_LOCK, run  # noqa: F401  (the runner reads these three)
from recipe.stages.tune.storage import open_storage  # noqa: F401
from recipe.stages.tune.worker import Plan, work  # noqa: F401
