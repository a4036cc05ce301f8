"""Stage 6, ensemble: `run` is the stage (recipe/stages/ensemble/stage.py); the names below are what callers import."""
from recipe.stages.ensemble.stage import (  # noqa: F401  (the stage, the runner's gate and public names)
    BOOTSTRAP, TEMPERATURE, Member, before, bootstrap_score, calibration, check_gain, check_student, combine,
    distill, drop_duplicates, greedy_select, paired_bootstrap, per_class, run)
