"""The HTML reports open and render in a real browser: headless Chromium (Debian's ``chromium``,
installed by scripts/bootstrap), its DOM after load and a screenshot."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess

import pytest

from sekiops.ops.demo_evidence import write_demo_evidence

CHROMIUM = "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else shutil.which("chromium")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (scripts/bootstrap installs it)")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium(args: list[str], profile: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run Chromium in its own process group; on a timeout the whole group is killed."""
    proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"chromium did not finish within {timeout} s")
    finally:
        try:  # renderer / GPU helpers that outlive the browser process
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(proc.args, proc.returncode, out.decode("utf-8", "replace"),
                                       err.decode("utf-8", "replace"))


@pytest.fixture(scope="module")
def report_html(tmp_path_factory):
    pytest.importorskip("papermill")
    from sekiops.cli.main import main

    work = tmp_path_factory.mktemp("report")
    ev = write_demo_evidence(str(work / "evidence"))
    out = work / "incident.html"
    code = main(["report", "incident", "--logs", ev["logs_file"], "--metrics", ev["metrics_file"], "--from",
                 ev["time_from"], "--to", ev["time_to"], "--memory-limit", ev["memory_limit"], "--out", str(out)])
    assert code == 0 and out.is_file()
    return out


def test_report_dom_has_the_headings_and_the_charts(report_html, tmp_path):
    res = chromium(["--dump-dom", report_html.as_uri()], str(tmp_path / "profile"))
    assert res.returncode == 0, res.stderr[-2000:]
    dom = res.stdout
    assert dom.lstrip().lower().startswith("<html") or "<html" in dom[:200].lower()
    for tag, text in (("h1", "Post-incident report: snapshot memory and restarts"),
                      ("h2", "What this report looked at"), ("h2", "Summary"), ("h2", "Timeline"),
                      ("h2", "Capacity: which projections fit the memory limit"), ("h2", "Recommended settings"),
                      ("h2", "Data and method")):
        assert f"<{tag} " in dom and text in dom, text
    images = re.findall(r'<img[^>]*src="data:image/png;base64,', dom)
    assert len(images) >= 4  # timeline, sizes, capacity, measured costs
    assert "Memory reached 99% of the 4 GiB limit" in dom
    assert "highlight hl-ipython3" not in dom  # no code cells
    assert "<title>Post-incident report: snapshot memory and restarts</title>" in dom  # not "Notebook"
    # one unit convention: binary units with their names, no NaN/None cells
    text = re.sub(r"<style.*?</style>|<script.*?</script>|<[^>]+>", " ", dom, flags=re.S)
    assert not re.search(r"\d (kB|MB|GB)\b", text), re.search(r".{60}\d (kB|MB|GB)\b.{20}", text)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", dom, flags=re.S)
    assert cells and not [c for c in cells if c.strip() in ("NaN", "None", "&lt;NA&gt;", "nan")]


def test_report_screenshot_is_not_blank(report_html, tmp_path):
    import numpy as np
    from PIL import Image

    png = tmp_path / "report.png"
    res = chromium([f"--screenshot={png}", "--window-size=1280,2000", report_html.as_uri()],
                   str(tmp_path / "profile"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert png.is_file() and png.stat().st_size > 10_000
    img = np.asarray(Image.open(png).convert("RGB"), dtype=float)
    assert img.shape[:2] == (2000, 1280)
    gray = img.mean(axis=2)
    assert gray.std() > 20  # not a blank page
    assert (gray < 200).mean() > 0.02  # text and charts, not a few pixels
    # the timeline chart drew: the limit line and the byte[] persist markers are red
    red = (img[..., 0] > 150) & (img[..., 1] < 80) & (img[..., 2] < 80)
    assert red.sum() > 500
    # top and bottom halves both have content (the page laid out, not just a header)
    assert gray[:1000].std() > 10 and gray[1000:].std() > 10
    keep = os.environ.get("SEKIOPS_KEEP_SCREENSHOTS")
    if keep:
        os.makedirs(keep, exist_ok=True)
        shutil.copyfile(png, os.path.join(keep, "incident-report.png"))
