"""Clean real data (sklearn's bundled sets) goes through the stages without a failed check."""
import pytest

from tests.conftest import invoke, record, write_config

CONFIGS = {
    "iris": "data: {{source: 'builtin:iris'}}\nmodel: {{hidden: [64]}}\ntrain: {{lr: 1.0e-2, batch_size: 16, epochs: 60}}",
    "wine": "data: {{source: 'builtin:wine'}}\nmodel: {{hidden: [64]}}\ntrain: {{lr: 1.0e-2, batch_size: 16, epochs: 60}}",
    "breast_cancer": "data: {{source: 'builtin:breast_cancer'}}\nmodel: {{hidden: [64]}}\n"
                     "train: {{lr: 1.0e-3, batch_size: 32, epochs: 40}}",
    "digits-mlp": "data: {{source: 'builtin:digits', shape: [1, 8, 8]}}\ntrain: {{lr: 1.0e-3, epochs: 30}}",
    "digits-cnn": "data: {{source: 'builtin:digits', shape: [1, 8, 8]}}\nmodel: {{kind: cnn, hidden: [16, 32]}}\n"
                  "train: {{lr: 1.0e-3, epochs: 15}}",
    "diabetes": "task: regression\ndata: {{source: 'builtin:diabetes', split: {{val: 0.2, test: 0.2, stratify: false}}}}\n"
                "model: {{hidden: [64, 64]}}\ntrain: {{lr: 1.0e-3, batch_size: 32, epochs: 60}}",
}
STAGES = ("inspect", "baseline", "overfit-batch", "regularize")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CONFIGS))
def test_no_failed_check_through_regularize(tmp_path, name):
    text = "name: {name}\nseed: 0\n" + CONFIGS[name] + \
        "\noverfit: {{samples: 16, steps: 300}}\nregularize: {{seeds: 2, ladder: [dropout, weight_decay, early_stopping]}}\n"
    cfg = write_config(tmp_path, text, name=name)
    runs = tmp_path / "runs"
    for stage in STAGES:
        r = invoke(stage, cfg, "--runs", runs)
        rec = record(runs, name, stage)
        failed = [(c["id"], c["title"]) for c in rec.get("checks", []) if c["status"] == "fail"]
        assert r.exit_code == 0 and not failed, (stage, failed, r)
