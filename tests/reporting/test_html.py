"""The HTML report (edgeprune.reporting): built from report dicts made here, shaped like report.json and
report.failed.json (no compile runs in these tests); one test opens the page in a real headless Chromium."""

from __future__ import annotations

import base64
import copy
import io
import json
import re
import shutil

import pytest
from PIL import Image

from edgeprune.reporting import REPORT_HTML, render_html, write_html_report
from edgeprune.reporting.charts import best_so_far, channel_rows, pareto_front

EVIL = "<script>alert(1)</script>"
WHERE = "host (x86_64, local)"


def _meas(median: float, p10: float, *, ratio: float | None = 1.0, noise: float = 0.01, noisy: bool = False,
          backend: str = "onnxruntime", where: str = WHERE) -> dict:
    return {"median_ms": median, "p10_ms": p10, "p90_ms": median * 1.1, "min_ms": p10 * 0.98, "spread": 0.15,
            "repeats": 600, "warmup": 20, "rounds": 40, "threads": 1, "backend": backend,
            "backend_version": "1.32.0" if backend == "onnxruntime" else "0.27.0", "where": where,
            "ratio_to_baseline": ratio, "baseline_median_ratio": ratio, "noise": noise, "noisy": noisy}


def _verdict(method: str = "ONNX Runtime vs PyTorch", ok: bool | None = True) -> dict:
    return {"ok": ok, "max_abs_diff": 4e-6, "samples": 16, "atol": 1e-4, "rtol": 1e-3, "top1_agreement": 1.0,
            "method": method}


GROUPS = [{"name": "layer3.0.shortcut.0", "full": 64, "choices": [8, 16, 24, 32, 40, 48, 56, 64], "depthwise": False},
          {"name": "conv1", "full": 16, "choices": [8, 16], "depthwise": False},
          {"name": "layer2.0.conv1", "full": 32, "choices": [8, 16, 24, 32], "depthwise": False}]
# (index, accuracy, ratio, feasible, noisy)
CANDIDATES = [(0, 0.644, 0.649, True, False), (1, 0.782, 0.767, False, False), (2, 0.183, 0.331, True, False),
              (3, 0.911, 0.879, False, True), (4, 0.700, 0.690, True, False)]


def ok_report(name: str = "resnet20") -> dict:
    """A good run's report.json, with the sections of edgeprune.report.build_report."""
    cands = [{"index": i, "widths": [40, 8, 16], "keep": [0.6, 0.5, 0.5], "origin": f"random s={r:.3f}",
              "accuracy": acc, "latency_ms": 0.75 * r, "ratio_to_baseline": r, "median_ms": 0.8 * r, "noise": 0.01,
              "noisy": noisy, "macs": int(41e6 * r), "params": int(272e3 * r), "feasible": feas, "from_store": False,
              "seconds": {"prune": 0.1, "latency": 0.2}, "measured_on": WHERE}
             for i, acc, r, feas, noisy in CANDIDATES]
    final_lat, same = _meas(0.47, 0.46, ratio=0.65), _meas(0.73, 0.72)
    return {
        "status": "ok", "run_id": "20260101-000000-abcdef", "out_dir": f"/tmp/out/{name}",
        "model": {"path": f"models/{name}.pt", "name": name, "arch": "resnet20", "input_shape": [3, 32, 32]},
        "data": {"name": "shapes", "num_classes": 10, "input_shape": [3, 32, 32], "train": 10000, "val": 2000,
                 "calib": 1000, "normalisation": {"mean": 0.5, "std": 0.25}},
        "target": {"name": "host", "where_measured": WHERE, "measured_on_stand_in": False, "limitations": None,
                   "latency_target": "0.7x", "latency_target_ratio": 0.7, "latency_target_ms": 0.52},
        "wall_time_s": 95.9, "reason": None,
        "search": {"agent": "random", "agent_info": {"name": "random"}, "budget": 5, "seed": 0, "evaluations": 5,
                   "evaluated_this_session": 5,
                   "confirmations": [{"index": 4, "search_ratio": 0.690, "confirmed_ratio": 0.712, "accuracy": 0.700,
                                      "noise": 0.002, "noisy": False},
                                     {"index": 0, "search_ratio": 0.649, "confirmed_ratio": 0.650, "accuracy": 0.644,
                                      "noise": 0.002, "noisy": False}],
                   "confirmed": True, "wall_time_s": 24.5,
                   "groups": {"groups": copy.deepcopy(GROUPS), "ignored": ["fc"], "unsupported": []}},
        "baseline": {"accuracy": 0.9535, "macs": 41218698, "params": 272474,
                     "channels": {"conv1": 16, "layer2.0.conv1": 32, "layer3.0.conv2": 64, "fc": 10},
                     "onnx_verification": _verdict(), "latency": _meas(0.84, 0.75, noise=0.045)},
        "final": {"accuracy_before_finetune": 0.62, "accuracy": 0.66, "macs": 17187738, "params": 106466,
                  "channels": {"conv1": 8, "layer2.0.conv1": 16, "layer3.0.conv2": 40, "fc": 10},
                  "latency": final_lat, "baseline_latency_same_run": same, "speedup_median": 0.73 / 0.47,
                  "simplifier": "onnxslim", "onnx_verification": _verdict(), "finetune": {"epochs": 0, "lr": 0.02,
                                                                                        "distill": False},
                  "candidate_index": 0, "widths": [40, 8, 16], "meets_latency_target": True},
        "deploy": {"runtimes": {"onnxruntime": {"latency": final_lat, "baseline_same_run": same,
                                                "speedup_median": 0.73 / 0.47}},
                   "not_timed": {"tvm": "its baseline measured 47.8x slower than onnxruntime's: it cannot win"},
                   "deployed_runtime": "onnxruntime", "policy": "auto", "measured_on": WHERE, "stand_in": False,
                   "basis": "fastest median latency of the final model",
                   "tvm": {"file": "model.tvm.so", "target": '{"kind":"llvm","mcpu":"znver4"}',
                           "triple": "x86_64-linux-gnu",
                           "library": {"elf_machine": 62, "arch": "x86_64", "embedded_device_modules": []},
                           "verification": _verdict("host: TVM library vs ONNX Runtime"), "compile_seconds": 1.32,
                           "tuning": None, "load": {"needs": ["apache-tvm"], "python": "vm = ...", "input": "x"},
                           "built": True},
                   "search_runtime": "onnxruntime",
                   "baseline_per_runtime": {"onnxruntime": _meas(0.79, 0.73),
                                            "tvm": _meas(54.0, 34.9, backend="tvm", noise=0.27, noisy=True)}},
        "candidates": cands, "gates": [], "warnings": ["a warning a user should see"],
    }


def failed_report(name: str = "resnet20") -> dict:
    """An infeasible run's report.failed.json: searched, nothing met the target, no final model, no deploy."""
    r = ok_report(name)
    for c in r["candidates"]:
        c["feasible"] = False
    r["target"].update(latency_target="0.3x", latency_target_ratio=0.3, latency_target_ms=0.22)
    r.update(status="infeasible", final=None, deploy=None,
             reason="no candidate measured under the latency target 0.300x; the closest was candidate 2 (0.331x)")
    r["search"].update(confirmations=[], confirmed=None)
    return r


def report_before_the_baseline() -> dict:
    """A run that failed before the baseline was measured: no search, no baseline, no candidates."""
    return {"status": "failed", "run_id": "r0", "out_dir": "/tmp/out/m", "reason": "the ONNX export differs",
            "model": {"path": "m.pt", "name": "m", "arch": None, "input_shape": [3, 32, 32]},
            "data": {"name": "shapes"}, "target": {"name": "host", "where_measured": WHERE,
                                                   "measured_on_stand_in": False, "latency_target": "0.5x"},
            "wall_time_s": 3.2, "search": None, "baseline": None, "final": None, "deploy": None, "candidates": [],
            "warnings": []}


def _images(page: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(m)))
            for m in re.findall(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_a_good_run_gives_one_self_contained_page_with_every_section(tmp_path):
    path = write_html_report(ok_report(), tmp_path)
    assert path == tmp_path / REPORT_HTML
    assert [p.name for p in tmp_path.iterdir()] == [REPORT_HTML]  # images embedded: nothing else written
    page = path.read_text(encoding="utf-8")
    for heading in ("Run", "Measurement conditions", "Baseline vs final model", "Pareto view", "Search convergence",
                    "Channels before and after", "Deployment: runtimes compared", "TVM library", "Confirmations",
                    "Warnings", "All evaluated candidates"):
        assert re.search(rf"<h[23][^>]*>{re.escape(heading)}", page), heading
    assert page.count("<table") >= 8
    images = _images(page)
    assert len(images) == 3 and all(im.format == "PNG" and im.width > 300 and im.height > 150 for im in images)
    assert not re.search(r'(src|href)="(https?:)?//', page)  # loads nothing from anywhere
    assert 'class="banner ok"' in page and 'class="banner fail"' not in page
    assert "missing-sections" not in page
    # the deploy comparison: timed, deployed, not timed with its reason; TVM library verified
    assert "<strong>deployed</strong>" in page and "not timed: its baseline measured 47.8x slower" in page
    assert "host: TVM library vs ONNX Runtime" in page
    assert "0.650×" in page and "95.35%" in page and "66.00%" in page  # final ratio, baseline and final accuracy
    assert "a warning a user should see" in page
    assert page.count('class="hl"') >= 3  # the chosen candidate in the confirmations, candidates; deployed runtime


def test_user_strings_are_escaped(tmp_path):
    r = ok_report(name=EVIL)
    r["reason"] = '<img src=x onerror="alert(2)">'
    r["status"] = "failed"
    r["warnings"] = [EVIL]
    r["candidates"][0]["origin"] = EVIL
    r["deploy"]["not_timed"] = {EVIL: EVIL}
    r["search"]["groups"]["groups"][0]["name"] = EVIL  # also a chart label: drawn as text, fine
    r["search"]["groups"]["groups"][1]["name"] = r"odd$\frac{$name"  # drawn as text, not parsed as mathtext
    page = write_html_report(r, tmp_path).read_text(encoding="utf-8")
    assert "<script" not in page and "onerror=" not in page.replace("onerror=&quot;", "")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in page
    assert f"<title>edgeprune report: &lt;script&gt;" in page


def test_an_infeasible_run_says_why_at_the_top_and_what_is_missing(tmp_path):
    page = write_html_report(failed_report(), tmp_path).read_text(encoding="utf-8")
    banner = page.index('class="banner fail"')
    assert banner < page.index("<h2")  # before every section
    assert "<strong>Run infeasible</strong>" in page and "the closest was candidate 2 (0.331x)" in page
    assert "final model" in page[page.index('id="missing-sections"'):][:400]
    assert "No final model in this report" in page and "No deployment in this report" in page
    assert "No candidate was re-measured" in page
    assert len(_images(page)) == 2  # the Pareto view and the convergence; no channels after pruning
    assert "no channel counts after pruning" in page


def test_a_run_that_stopped_before_the_baseline_still_gets_a_page(tmp_path):
    page = write_html_report(report_before_the_baseline(), tmp_path).read_text(encoding="utf-8")
    assert "<strong>Run failed</strong>: the ONNX export differs" in page
    assert _images(page) == []
    assert "nothing to plot" in page and "Neither the baseline nor a final model" in page
    assert "no baseline measurement in this report" in page and "No search in this report" in page
    assert render_html(json.loads(json.dumps(report_before_the_baseline())))  # as read back from JSON


def test_sections_of_unexpected_shape_do_not_crash(tmp_path):
    r = ok_report()
    r["candidates"].append({"index": 9, "accuracy": None, "ratio_to_baseline": None, "feasible": False})
    r["candidates"].append("not a dict")
    r["final"]["widths"] = [8]  # does not match the groups: channels per layer instead
    r["deploy"]["tvm"] = {"built": False, "reason": "the profile's runtime is onnxruntime"}
    r["target"]["latency_target_ratio"] = None
    page = write_html_report(r, tmp_path).read_text(encoding="utf-8")
    assert len(_images(page)) == 3
    assert "Each prunable group is named" not in page  # channels per layer: the caption says nothing of groups
    assert "the profile&#x27;s runtime is onnxruntime" in page


def test_stand_in_and_emulated_measurements_are_labelled_in_bold(tmp_path):
    r = ok_report()
    where = "STAND-IN host (x86_64, local) for target rpi4 (not the device)"
    r["target"].update(where_measured=where, measured_on_stand_in=True)
    r["deploy"].update(measured_on=where, stand_in=True)
    r["deploy"]["tvm"]["verification"] = _verdict("EMULATED device rpi4-emu: TVM library vs ONNX Runtime here")
    page = write_html_report(r, tmp_path).read_text(encoding="utf-8")
    assert "<strong>STAND-IN</strong> host (x86_64, local) for target rpi4" in page
    assert "<strong>STAND-IN: latency was measured on a stand-in, not on the target device</strong>" in page
    assert "<strong>EMULATED</strong> device rpi4-emu" in page


def test_gates_are_listed_when_the_run_had_some(tmp_path):
    r = ok_report()
    r["gates"] = [{"name": "min_accuracy", "threshold": 0.9, "value": 0.66, "passed": False},
                  {"name": "max_latency_ms", "threshold": 1.0, "value": 0.47, "passed": True}]
    page = write_html_report(r, tmp_path).read_text(encoding="utf-8")
    assert 'id="gates"' in page and "MISSED" in page and "min_accuracy" in page
    assert 'id="gates"' not in write_html_report(ok_report(), tmp_path / "again").read_text(encoding="utf-8")


def test_pareto_front_and_best_so_far():
    pts = [(0.3, 0.2), (0.4, 0.1), (0.5, 0.6), (0.5, 0.5), (0.9, 0.55), (1.0, 0.95)]
    assert pareto_front(pts) == [(0.3, 0.2), (0.5, 0.6), (1.0, 0.95)]
    cands = [{"accuracy": 0.5, "feasible": False}, {"accuracy": 0.3, "feasible": True},
             {"accuracy": 0.2, "feasible": True}, {"accuracy": 0.4, "feasible": True}]
    assert best_so_far(cands) == [None, 0.3, 0.3, 0.4]


def test_channels_come_from_the_groups_else_from_the_layers():
    kind, rows = channel_rows(ok_report())
    assert kind == "group" and rows[0] == ("layer3.0.shortcut.0", 64, 40)
    r = ok_report()
    r["search"] = None
    kind, rows = channel_rows(r)
    assert kind == "layer" and ("layer3.0.conv2", 64, 40) in rows
    assert channel_rows(failed_report()) is None


def _chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.mark.needs_browser
def test_the_page_renders_in_headless_chromium(tmp_path):
    """Images decode and show, tables are there, nothing overflows sideways, and the console has no error."""
    browser, driver_path = _chromium(), shutil.which("chromedriver")
    if browser is None or driver_path is None:
        missing = " and ".join(n for n, p in (("chromium", browser), ("chromedriver", driver_path)) if p is None)
        pytest.skip(f"{missing} missing (bash tools/setup_browser.sh installs Debian's chromium and "
                    "chromium-driver; root or sudo)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is missing (pip install -e '.[dev]')")
    from selenium.webdriver.chrome.service import Service

    ok = write_html_report(ok_report(name=EVIL), tmp_path / "ok")
    failed = write_html_report(failed_report(), tmp_path / "failed")
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    try:
        driver.get(ok.as_uri())
        images = driver.execute_script("return Array.from(document.images).map("
                                       "i => [i.id, i.complete, i.naturalWidth, i.getBoundingClientRect().width])")
        assert [i[0] for i in images] == ["img-pareto", "img-convergence", "img-channels"]
        assert all(done and natural > 0 and shown > 0 for _, done, natural, shown in images), images
        assert driver.execute_script("return document.querySelectorAll('table').length") >= 8
        assert driver.execute_script("return document.querySelectorAll('script').length") == 0  # the name is text
        assert EVIL in driver.title
        assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        assert severe == []

        driver.get(failed.as_uri())
        banner = driver.find_element("id", "status-banner")
        assert banner.is_displayed() and "Run infeasible" in banner.text
        assert driver.execute_script("return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        assert [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"] == []
    finally:
        driver.quit()


def test_a_deep_copy_of_the_report_is_not_changed(tmp_path):
    r = ok_report()
    before = copy.deepcopy(r)
    write_html_report(r, tmp_path)
    assert r == before
