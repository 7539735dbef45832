"""The report page: its pieces (crops, plots, the table's rows, escaping) and, in headless
Chromium, the page of a real denoise run: no script errors, the slider moves, the table sorts,
filters and opens a row."""

import json
import os
import re
import shutil

import numpy as np
import pyarrow as pa
import pytest

from raydenoise.jobs.denoise import DenoiseConfig, run_denoise
from raydenoise.ledger import report as rpt
from raydenoise.ledger import report_page as page

from conftest import png_bytes, write


def test_the_crops_show_where_the_output_changed_most_and_the_finest_texture_elsewhere():
    before = np.full((300, 400, 3), 100, np.uint8)
    after = before.copy()
    after[200:260, 40:100] = 160  # the only change
    detail = before.copy()
    detail[20:120, 250:350] = np.random.default_rng(0).integers(0, 255, (100, 100, 3))  # texture
    (r1, y1, x1), (r2, y2, x2) = page.regions(before, after, detail, crop=64)
    assert r1 == "most changed" and y1 <= 200 and y1 + 64 >= 260 and x1 <= 40 and x1 + 64 >= 100
    assert r2 == "finest texture" and 20 - 64 < y2 < 120 and 250 - 64 < x2 < 350
    c = page.compare(
        "a.png", "best 1", {"key": "a.png"}, {"input": before, "output": after, "reference": detail}
    )
    assert c.slider["before"].startswith("data:image/jpeg;base64,") and len(c.crops) == 2
    assert (
        all(k in c.crops[0] for k in ("input", "output", "reference"))
        and c.crops[0]["size"] == page.CROP
    )
    tiny = np.zeros((10, 12, 3), np.uint8)  # smaller than a crop: the crop is the whole image
    assert page.compare("t", "x", {}, {"input": tiny, "output": tiny + 1}).crops[0]["size"] == 10


def test_plots_are_computed_in_streaming_passes_and_drawn_as_svg():
    chunks = [np.array([1.0, 2.0, np.inf]), np.array([3.0, np.nan, 2.5])]
    counts, edges = page.histogram(lambda: iter(chunks), bins=4)
    assert counts.sum() == 4 and edges[0] == 1.0 and edges[-1] == 3.0  # non-finite values left out
    assert page.histogram(lambda: iter([np.array([np.nan])])) is None
    svg = page.svg_histogram("gain <b>", "dB", [("gain", counts, edges)])
    assert (
        svg.startswith("<svg") and "gain &lt;b&gt;" in svg and svg.count("<rect") == 3
    )  # empty bins: no bar
    assert page.svg_bars("per node", {"n1": 3, "n2": 1}).count("<rect") == 2
    assert (
        page.svg_scatter("t", "x", "y", np.array([1.0, 2.0]), np.array([3.0, np.nan])).count(
            "<circle"
        )
        == 1
    )


def test_a_large_report_keeps_failures_and_the_best_and_worst_rows_within_the_limit():
    rows = [{"key": f"{i:05d}", "status": "ok", "v": float(i)} for i in range(1000)]
    rows[500]["status"] = "error"
    kept, total = page.select_rows(lambda: iter(rows), lambda r: r["v"], limit=100)
    assert total == 1000 and len(kept) <= 100
    keys = {r["key"] for r in kept}
    assert "00500" in keys and "00000" in keys and "00999" in keys and "00450" not in keys
    small, n = page.select_rows(lambda: iter(rows[:50]), lambda r: r["v"], limit=100)
    assert n == 50 and [r["key"] for r in small] == [r["key"] for r in rows[:50]]


def test_every_name_is_escaped_and_no_name_can_end_the_script():
    evil = "</script><img src=x onerror=alert(1)>.png"
    table = pa.Table.from_pylist(
        [rpt.blank_row(evil, status="ok", width=4, height=4, seconds=0.1)], schema=rpt.SCHEMA
    )
    summary = rpt.summarize(table.to_pylist(), 1.0)
    html = page.denoise_page(
        title=f"report: {evil}",
        summary=summary,
        facts={"input": evil},
        batches=lambda cols: table.select(cols).to_batches(),
        comparisons=[],
        links=lambda key: None,
        where={"input": "in", "output": "out"},
    )
    assert "<img src=x" not in html and html.count("</script>") == 2  # the data script and the code
    data = re.search(
        r'<script type="application/json" id="rows-data">(.*?)</script>', html, re.S
    ).group(1)
    assert json.loads(data)["rows"][0][0] == evil
    assert (
        "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html
    )  # no network


def test_without_a_reference_the_page_shows_the_change_and_noise_levels_and_no_empty_columns():
    rows = [
        rpt.blank_row(
            f"{i}.png",
            status="ok",
            width=40,
            height=30,
            seconds=0.1 + i / 10,
            input_noise=20.0 + i,
            output_noise=1.0,
            change=15.0 + i,
            finished=1000.0 + i,
        )
        for i in range(5)
    ]
    table = rpt.table(rows)
    html = page.denoise_page(
        title="t",
        summary=rpt.summarize(rows, 2.0),
        facts={},
        batches=lambda cols: table.select(cols).to_batches(),
        comparisons=[],
        links=lambda key: None,
        where={"input": "in", "output": "out"},
    )
    data = json.loads(re.search(r'id="rows-data">(.*?)</script>', html, re.S).group(1))
    assert (
        "psnr" not in data["columns"]
        and "change" in data["columns"]
        and "input_noise" in data["columns"]
    )
    for title in (
        "Change per image",
        "Estimated noise level",
        "Time per image over the run",
        "Time per image by size",
    ):
        assert title in html
    assert html.count("<circle") == 10  # 5 points in each time plot


# ----------------------------------------------------------------------------- in a real browser


def _browser():
    """Headless Chromium driven by Selenium, from the system's packages (make test installs
    them where the system's package manager can)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (make test installs it)")
    chromium = (
        shutil.which("chromium")
        or shutil.which("chromium-browser")
        or shutil.which("google-chrome")
    )
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip(
            "no Chromium/chromedriver on this machine: make test installs them with the system's package "
            "manager where it can (apt-get install chromium chromium-driver)"
        )
    options = Options()
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1800",
    ):
        options.add_argument(arg)
    options.binary_location = chromium
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.mark.slow
@pytest.mark.browser
def test_the_report_of_a_run_works_in_headless_chromium(ray_cluster, tmp_path):
    from selenium.webdriver.common.by import By
    from skimage import data as photos

    rng = np.random.default_rng(0)
    for i, photo in enumerate(
        (
            photos.astronaut,
            photos.coffee,
            photos.chelsea,
            photos.rocket,
            photos.immunohistochemistry,
        )
    ):
        clean = np.ascontiguousarray(photo()[:200, :260])
        noisy = np.clip(clean + rng.normal(0, 20, clean.shape), 0, 255).astype(np.uint8)
        write(tmp_path / "ref" / f"img {i}&<x>.png", png_bytes(clean))
        write(tmp_path / "in" / f"img {i}&<x>.png", png_bytes(noisy))
    write(tmp_path / "in" / "broken.png", b"not a png")
    run_denoise(
        DenoiseConfig(
            input=str(tmp_path / "in"),
            output=str(tmp_path / "out"),
            model="builtin:denoise",
            reference=str(tmp_path / "ref"),
        ),
        log=lambda m: None,
    )
    report = tmp_path / "out" / "_report" / "report.html"
    assert report.stat().st_size < 3_000_000
    browser = _browser()
    try:
        browser.get(report.as_uri())
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        summary = browser.find_element(By.ID, "summary").text
        assert summary.startswith("5 images denoised, 1 failed")
        assert len(browser.find_elements(By.CSS_SELECTOR, "svg.plot")) >= 4
        # the slider moves the line between before and after
        slider = browser.find_element(By.CSS_SELECTOR, ".cmp .slider input")
        after = slider.find_element(By.XPATH, "../img[contains(@class, 'after')]")
        browser.execute_script(
            "arguments[0].value = 80; arguments[0].dispatchEvent(new Event('input'));", slider
        )
        assert "80%" in after.value_of_css_property("clip-path")
        # sorting by PSNR: ascending, then descending on a second click (the failed row, no PSNR, last)
        header = browser.find_element(By.XPATH, "//table[@id='rows']//th[text()='psnr']")
        col = int(header.get_attribute("data-col"))

        def column() -> list[str]:
            return [
                tr.find_elements(By.TAG_NAME, "td")[col].text
                for tr in browser.find_elements(By.CSS_SELECTOR, "#rows tbody tr")
            ]

        header.click()
        values = [float(v) for v in column() if v != "–"]
        assert len(values) == 5 and values == sorted(values) and column()[-1] == "–"
        header.click()
        values = [float(v) for v in column() if v != "–"]
        assert values == sorted(values, reverse=True)
        # filtering by status, then by name
        from selenium.webdriver.support.ui import Select

        Select(browser.find_element(By.ID, "status")).select_by_visible_text("error")
        assert [
            tr.text.split()[0] for tr in browser.find_elements(By.CSS_SELECTOR, "#rows tbody tr")
        ] == ["broken.png"]
        Select(browser.find_element(By.ID, "status")).select_by_index(0)
        data = browser.execute_script(
            "return JSON.parse(document.getElementById('rows-data').textContent)"
        )
        embedded = sorted(data["compare"])
        loose = sorted({r[0] for r in data["rows"] if r[1] == "ok"} - set(embedded))
        assert (
            len(embedded) == 4 and len(loose) == 1
        )  # best 2 and worst 2 embedded, the fifth opens its files
        box = browser.find_element(By.ID, "filter")
        for key in (embedded[0], loose[0]):
            box.clear()
            box.send_keys(key)
            rows = browser.find_elements(By.CSS_SELECTOR, "#rows tbody tr")
            assert len(rows) == 1 and key in rows[0].text  # the name shown as text, not markup
            rows[0].find_element(By.CSS_SELECTOR, "a.open").click()
            opened = browser.find_elements(By.CSS_SELECTOR, ".cmp.open")
            assert len(opened) == 1 and opened[0].is_displayed()
            if key in embedded:
                assert opened[0].get_attribute("id") == f"cmp-{data['compare'][key]}"
                assert (
                    len(opened[0].find_elements(By.CSS_SELECTOR, ".crops img")) == 6
                )  # 2 regions x 3
            else:  # the input and output files themselves, by relative links
                assert opened[0].get_attribute("id") == "viewer"
                img = browser.find_element(By.ID, "viewer-full-out")
                browser.execute_script("return arguments[0].decode()", img)
                assert browser.execute_script("return arguments[0].naturalWidth", img) == 260
        assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        browser.execute_script("window.scrollTo(0, 0)")
        shot = tmp_path / "report.png"
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        if os.environ.get("RAYDENOISE_SCREENSHOT_TO"):  # how the README's screenshot is made
            shutil.copy(shot, os.environ["RAYDENOISE_SCREENSHOT_TO"])
    finally:
        browser.quit()
