"""configs/text-gpt.yaml end to end (issue 19 item 9): a char-level GPT on the Python language reference passes
all six stages on CPU, and its sealed-test loss beats the best n-gram model the config names (slow: ~5 minutes
on 2 quiet cores)."""
import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import invoke
from tests.text import corpus

ROOT = Path(__file__).resolve().parents[2]
STAGES = ["inspect", "baseline", "overfit-batch", "regularize", "tune", "ensemble"]


@pytest.mark.slow
def test_text_gpt_config_passes_six_stages_and_beats_the_ngram_model_on_test(tmp_path):
    raw = yaml.safe_load((ROOT / "configs" / "text-gpt.yaml").read_text())
    raw["data"]["source"] = str(corpus.write_folder(tmp_path / "pydoc-topics", corpus.clean_topics()))
    cfg = tmp_path / "text-gpt.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    r = invoke("run", cfg, "--runs", tmp_path / "runs", "-q")
    assert r.exit_code == 0, r.stderr[-2000:]
    runs = tmp_path / "runs" / "text-gpt"
    recs = {s: json.loads((runs / s / "record.json").read_text()) for s in STAGES}
    assert {s: recs[s]["status"] for s in STAGES} == dict.fromkeys(STAGES, "passed")
    checks = {c["id"]: c for c in recs["ensemble"]["checks"]}
    beats = checks["ensemble.beats-ngram"]
    assert beats["status"] == "pass", beats
    base = json.loads((runs / "baseline" / "baselines.json").read_text())
    assert set(base["ngram"]) == {"unigram", "bigram", "kn3gram"}
    # the first failures a broken language model hits all passed on the way
    base_checks = {c["id"]: c["status"] for c in recs["baseline"]["checks"]}
    for cid in ("baseline.causal", "baseline.target-shift", "baseline.padding", "baseline.input-independent"):
        assert base_checks[cid] == "pass"
    assert {c["id"]: c["status"] for c in recs["overfit-batch"]["checks"]}["overfit.train-fit"] == "pass"
