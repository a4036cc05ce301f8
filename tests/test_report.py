"""recipe report: one self-contained HTML page, checked as text and in a headless Chromium without network."""
import json
import re
import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import invoke, record, write_config, run_stages
from tests.stages.test_ensemble import IRIS_OK, STAGES

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                  "--disable-component-update", "--disable-sync", "--disable-extensions",
                  # no network: every host resolves to nothing and every request goes to a dead proxy
                  "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=socks5://127.0.0.1:9",
                  "--proxy-bypass-list=<-loopback>"]


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    cfg = write_config(root, IRIS_OK, name="iris")
    runs = root / "runs"
    run_stages(cfg, runs, STAGES)
    start = time.process_time()     # CPU seconds: on a busy machine wall time measures the neighbours
    r = invoke("report", cfg, "--runs", runs, "--json")
    elapsed = time.process_time() - start
    assert r.exit_code == 0, r
    return cfg, runs, r.json, elapsed


def _pngs(runs, stage):
    return [rel for rel in record(runs, "iris", stage)["artifacts"] if rel.endswith(".png")]


def test_report_is_small_fast_and_complete(done):
    cfg, runs, info, elapsed = done
    page = (runs / "iris" / "report.html").read_text()
    assert info["bytes"] == len(page.encode()) < 5_000_000 and elapsed < 3.0
    for i, stage in enumerate(STAGES, 1):
        rec = record(runs, "iris", stage)
        assert f'id="stage-{stage}"' in page and f"{i}. {stage}" in page
        for c in rec["checks"]:
            assert f"<code>{c['id']}</code>" in page, c["id"]
    images = sum(len(_pngs(runs, s)) for s in STAGES)
    curves = page.count("<h3>Every run's curve</h3>")     # one figure per stage that trained a run itself
    trained = [s for s in STAGES if any((runs / "iris" / s).rglob("metrics.jsonl"))]
    assert images >= 8 and curves == len(trained) and trained[:4] == ["baseline", "overfit-batch", "regularize", "tune"]
    assert info["images"] == images + curves == page.count('src="data:image/png;base64,')
    art = json.loads((runs / "iris" / "ensemble" / "ensemble.json").read_text())
    assert f'<div class="big">{art["test"]:.4g}</div>' in page                   # the headline test score
    assert "reliability" in page and "confusion" in page
    # self-contained: no script, no fetched font, stylesheet or image
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page) and "@import" not in page
    assert "url(" not in page


def test_stale_and_missing_stages_are_shown(tmp_path):
    cfg = write_config(tmp_path, IRIS_OK, name="part")
    runs = tmp_path / "runs"
    assert invoke("inspect", cfg, "--runs", runs, "-q").exit_code == 0
    assert invoke("baseline", cfg, "--runs", runs, "-q").exit_code == 0
    r = invoke("report", cfg, "--runs", runs, "-o", "train.lr=0.05")
    assert r.exit_code == 0, r
    page = (runs / "part" / "report.html").read_text()
    section = page[page.index('id="stage-baseline"'):page.index('id="stage-overfit-batch"')]
    assert ">stale<" in section and "train.lr: 0.01 -&gt; 0.05" in section
    assert ">passed<" in page[page.index('id="stage-inspect"'):page.index('id="stage-baseline"')]
    for stage in STAGES[2:]:
        tail = page[page.index(f'id="stage-{stage}"'):]
        assert ">missing<" in tail[:400] and f"run <code>recipe {stage}</code>" in tail
    assert "not available" in page and "stopped at baseline (stale)" in page


def test_report_does_not_import_torch(done):
    cfg, runs, *_ = done
    code = ("import sys; from typer.testing import CliRunner; from recipe.cli import app; "
            f"r = CliRunner().invoke(app, ['report', {str(cfg)!r}, '--runs', {str(runs)!r}]); "
            "assert r.exit_code == 0, r.output; print(sorted(m for m in ('torch', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => __errors.push(String(e.message || (e.target && e.target.src) || e)), true);
const __ce = console.error; console.error = (...a) => { __errors.push(a.join(' ')); __ce(...a); };
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const bad = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt);
  const out = document.createElement('pre'); out.id = '__probe';
  out.textContent = JSON.stringify({images: imgs.length, bad: bad, errors: __errors, text: document.body.innerText});
  document.body.appendChild(out);
});
</script>"""


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="Debian's chromium is not installed here "
                    "(apt-get install chromium; .ci/run installs it)")
def test_report_in_headless_chromium(done, tmp_path):
    cfg, runs, info, _ = done
    report = runs / "iris" / "report.html"
    # 1. the page as shipped: screenshot, and Chromium's own log must hold no console error
    shot = tmp_path / "report.png"
    r = subprocess.run([_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile1'}", "--hide-scrollbars",
                        "--enable-logging=stderr", "--v=0", "--window-size=1280,4000", f"--screenshot={shot}",
                        report.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 50_000, r.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    console = [line for line in r.stderr.splitlines() if "CONSOLE" in line]
    assert console == []
    shutil.copyfile(shot, runs / "iris" / "report-screenshot.png")
    # 2. the same page with a probe that records errors and image loads, read back through --dump-dom
    probed = tmp_path / "probed.html"
    probed.write_text(report.read_text().replace("<head>", "<head>" + PROBE, 1))
    r = subprocess.run([_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile2'}",
                        "--virtual-time-budget=5000", "--dump-dom", probed.as_uri()],
                       capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="__probe">(.*?)</pre>', r.stdout, re.S)
    assert found, r.stderr[-2000:]
    import html

    probe = json.loads(html.unescape(found.group(1)))
    assert probe["errors"] == [] and probe["bad"] == []
    assert probe["images"] == info["images"] >= 8
    text = probe["text"]
    for stage in STAGES:
        assert stage in text
        for c in record(runs, "iris", stage)["checks"]:
            assert c["id"] in text, c["id"]
    assert "Final test result" in text and "95% bootstrap interval" in text
