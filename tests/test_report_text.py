"""The report's language-model card (issue 19 item 7): the final model's val loss curve next to samples generated
from it with fixed seeds, prompted with train text only; checked as text and in a headless Chromium."""
import html
import json
import re
import subprocess

import pytest

from recipe import report_text as RT
from tests.conftest import invoke
from tests.test_report import CHROMIUM_FLAGS, PROBE, _chromium
from tests.text import final_model as F

SAMPLE = re.compile(r'<pre class="sample mono"><b>(.*?)</b>(.*?)</pre>', re.S)


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    root = tmp_path_factory.mktemp("report_lm")
    cfg, runs, ds = F.make(root, epochs=3, inspect=True)
    r = invoke("report", cfg, "--runs", runs, "--json")
    assert r.exit_code == 0, r
    return cfg, runs, ds, r.json


def _samples(page: str) -> list[tuple[str, str]]:
    return [(html.unescape(p), html.unescape(c)) for p, c in SAMPLE.findall(page)]


def test_samples_are_predicts_own_with_fixed_seeds_and_train_prompts(lm):
    cfg, runs, ds, info = lm
    page = (runs / "lm" / "report.html").read_text()
    assert 'id="samples"' in page and "Language model: val loss and samples" in page
    got = _samples(page)
    rec = json.loads((runs / "lm" / "inspect" / "record.json").read_text())
    windows = next(c for c in rec["checks"] if c["id"] == "data.windows")["evidence"]["sample"]
    assert [p for p, _ in got] == [w["input"][:RT.PROMPT_CHARS] for w in windows][:RT.PROMPTS]
    assert len(got) == RT.PROMPTS == 3
    train, test = "".join(ds.docs["train"].texts), ds.docs["test"].texts
    for i, (prompt, continuation) in enumerate(got):
        assert prompt in train                                     # prompts are train text
        assert not any(prompt in t for t in test), prompt          # ... that no test document holds
        assert len(continuation) == RT.TOKENS                      # char tokenizer: a character per token
        r = invoke("predict", cfg, "--runs", runs, "--prompt", prompt, "--tokens", RT.TOKENS, "--temperature",
                   RT.TEMPERATURE, "--top-k", RT.TOP_K, "--seed", RT.SEED + i, "--json")
        assert r.exit_code == 0 and r.json["continuation"] == continuation, (i, r)
    assert len({c for _, c in got}) == 3          # one seed per sample: the samples do not converge on one text
    # the same records give the same page's samples
    again = invoke("report", cfg, "--runs", runs, "--out", runs / "again.html")
    assert again.exit_code == 0 and _samples((runs / "again.html").read_text()) == got


def test_the_curve_sits_beside_the_samples(lm):
    cfg, runs, ds, info = lm
    page = (runs / "lm" / "report.html").read_text()
    card = page[page.index('id="samples"'):]
    card = card[:card.index("</section>")]
    assert card.index('alt="val loss curve"') < card.index("<h3") < card.index('class="sample mono"')
    assert "val loss of 1 ensemble run(s)" in card         # tests/text/final_model trains its member there
    assert "prompts (bold) are the first 24 characters of training windows, never test text" in card
    assert info["images"] == 3       # the ensemble stage's run curves, inspect's lengths.png and this curve


def test_the_final_result_shows_test_perplexity_and_the_best_ngram(lm, tmp_path):
    """What ensemble's sealed test records for a language model (test_detail: perplexity, the n-gram models on
    the test documents) is shown in the final result."""
    cfg, runs, ds, _ = lm
    detail = {"metric": "loss (nats/token)", "score": 1.9, "perplexity": 6.6859, "perplexity_ci95": [6.1, 7.3],
              "ngram": {"best": "kn5gram", "models": {"kn5gram": {"test_loss": 2.0123, "test_perplexity": 7.48}},
                        "gain": {"mean": 0.1123, "ci95": [0.05, 0.17], "n_documents": 7}}}
    F.rewrite(runs, "lm", test_detail=detail)
    try:
        r = invoke("report", cfg, "--runs", runs, "--out", tmp_path / "f.html")
        assert r.exit_code == 0, r
        page = html.unescape((tmp_path / "f.html").read_text())
    finally:
        F.rewrite(runs, "lm", test_detail={})
    assert "<dt>test perplexity</dt><dd>6.686 (95% interval 6.1 – 7.3)</dd>" in page
    assert ("<dt>best n-gram on test (kn5gram, chosen on val)</dt><dd>2.0123 nats/token; the final model's gain "
            "+0.1123 (95% interval +0.0500 – +0.1700 over 7 test documents; > 0: the final model predicts test "
            "better)</dd>") in page


def test_without_a_loadable_model_the_card_says_why(lm, tmp_path):
    cfg, runs, ds, _ = lm
    member = runs / "lm" / "ensemble" / "best.pt"
    saved = member.read_bytes()
    member.unlink()
    try:
        r = invoke("report", cfg, "--runs", runs, "--out", tmp_path / "r.html")
        assert r.exit_code == 0, r
        page = (tmp_path / "r.html").read_text()
        assert "samples not available: " in page and "best.pt: checkpoint not found" in page
        assert _samples(page) == [] and 'alt="val loss curve"' in page
    finally:
        member.write_bytes(saved)


def test_only_a_language_model_gets_the_card(lm, tmp_path):
    cfg, runs, ds, _ = lm
    for task in ("text-classification", "classification"):
        F.rewrite(runs, "lm", task=task)
        try:
            r = invoke("report", cfg, "--runs", runs, "--out", tmp_path / f"{task}.html")
            assert r.exit_code == 0, r
            page = (tmp_path / f"{task}.html").read_text()
            assert 'id="samples"' not in page and ".sample{" not in page and "Final test result" in page
        finally:
            F.rewrite(runs, "lm", task="language-model")


@pytest.mark.slow
def test_after_baseline_the_curve_shows_the_best_ngram(lm, tmp_path):
    cfg, runs, ds, _ = lm
    assert invoke("baseline", cfg, "--runs", runs, "-q").exit_code == 0
    r = invoke("report", cfg, "--runs", runs, "--out", tmp_path / "b.html")
    assert r.exit_code == 0, r
    page = (tmp_path / "b.html").read_text()
    assert "val loss of 1 ensemble run(s) and the best n-gram model" in page


@pytest.mark.skipif(_chromium() is None, reason="Debian's chromium is not installed here")
def test_language_model_card_in_headless_chromium(lm, tmp_path):
    cfg, runs, ds, info = lm
    report = runs / "lm" / "report.html"
    shot = tmp_path / "lm.png"
    r = subprocess.run([_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'p1'}", "--hide-scrollbars",
                        "--enable-logging=stderr", "--v=0", "--window-size=1280,2400", f"--screenshot={shot}",
                        report.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 50_000, r.stderr[-2000:]
    assert [line for line in r.stderr.splitlines() if "CONSOLE" in line] == []
    probed = tmp_path / "probed.html"
    probed.write_text(report.read_text().replace("<head>", "<head>" + PROBE, 1))
    r = subprocess.run([_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'p2'}",
                        "--virtual-time-budget=5000", "--dump-dom", probed.as_uri()],
                       capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="__probe">(.*?)</pre>', r.stdout, re.S)
    assert found, r.stderr[-2000:]
    probe = json.loads(html.unescape(found.group(1)))
    assert probe["errors"] == [] and probe["bad"] == [] and probe["images"] == info["images"]
    text = probe["text"]
    assert "Language model: val loss and samples" in text
    for prompt, continuation in _samples(report.read_text()):
        assert " ".join((prompt + continuation).split())[:60] in " ".join(text.split())
