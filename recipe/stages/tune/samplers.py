"""tune's samplers (random and TPE seeded per trial, quasi-random, grid) and its pruner choice (ASHA, median, none)."""
from __future__ import annotations


def _trial_seed(seed: int, number: int) -> int:
    return (seed * 1_000_003 + number * 7919 + 17) % (2 ** 32)


def _per_trial_seed_class():
    import optuna

    class PerTrialSeed(optuna.samplers.BaseSampler):
        """Each trial is sampled by a fresh `make(seed)` seeded by (seed, trial number): Optuna's public
        constructors seed the RNG (no private RNG is reseeded), and a sampler's state is all in its RNG and the
        study's trials (TPE's search space is an intersection over the trials: recomputed, the same)."""

        def __init__(self, make, seed: int):
            self.make, self.seed = make, seed
            self.current = make(seed)

        def before_trial(self, study, trial):
            self.current = self.make(_trial_seed(self.seed, trial.number))
            self.current.before_trial(study, trial)

        def infer_relative_search_space(self, study, trial):
            return self.current.infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self.current.sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self.current.sample_independent(study, trial, param_name, param_distribution)

        def after_trial(self, study, trial, state, values):
            self.current.after_trial(study, trial, state, values)

        def reseed_rng(self):
            self.current.reseed_rng()

    return PerTrialSeed


def make_sampler(method: str, seed: int):
    """Random and TPE draw from an RNG seeded by (seed, trial number): reruns, resumes and workers never replay
    the sequence of an earlier trial, and trial n of a study always gets the same random point."""
    import optuna

    per_trial = _per_trial_seed_class()
    if method == "random":
        return per_trial(lambda s: optuna.samplers.RandomSampler(seed=s), seed)
    if method == "tpe":
        return per_trial(lambda s: optuna.samplers.TPESampler(seed=s, n_startup_trials=5), seed)
    if method == "quasi-random":   # the Sobol index is a study attribute: shared by workers and resumes
        import warnings

        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed,
                                          warn_independent_sampling=False, warn_asynchronous_seeding=False)
    # grid: the points are enqueued under the study lock; any parameter not fixed would be random
    return per_trial(lambda s: optuna.samplers.RandomSampler(seed=s), seed)


def make_pruner(name: str, epochs: int = 0, budget: int = 0):
    """`epochs`: the longest a trial trains; `budget`: the study's trial count (ASHA fits its rungs to both)."""
    import optuna

    if name == "asha":   # rungs at 1, 3, 9 of 18 epochs (recipe/stages/tune/asha.py)
        from recipe.stages.tune.asha import ASHAPruner

        return ASHAPruner(epochs, budget)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=3)
    return optuna.pruners.NopPruner()
