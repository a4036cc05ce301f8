"""Stage 6, ensemble: `run` is the stage (ensemble/stage.py); the other names are what callers and tests import."""
from recipe.stages.ensemble.distill import TEMPERATURE, check_student, distill  # noqa: F401
from recipe.stages.ensemble.gain import check_gain, disagreement, judged_text  # noqa: F401
from recipe.stages.ensemble.members import Member, drop_duplicates, gather_members  # noqa: F401
from recipe.stages.ensemble.sealed_test import calibration, check_test, evaluate_test, per_class  # noqa: F401
from recipe.stages.ensemble.selection import combine, greedy_select  # noqa: F401
from recipe.stages.ensemble.stage import before, run  # noqa: F401  (the runner reads these two)
from recipe.stages.ensemble.stats import BOOTSTRAP, bootstrap_score, paired_bootstrap  # noqa: F401
