"""The page of `charlstm serve` in a real browser: headless Chromium driven by Selenium.

The test serves a tiny trained run folder on 127.0.0.1 and uses the page as a person would:
generate (streamed), score (shaded characters with their probabilities), write (suggestions
appended on click) and the run's loss chart. It needs Debian's `chromium` and `chromium-driver`
and `pip install selenium`; without them it skips, unless CHARLSTM_REQUIRE_BROWSER is set (as
`.ci/run` does after installing them), where a missing browser fails instead.

CHARLSTM_SCREENSHOTS=1 saves the Generate and Score views to benchmarks/serve-page.png and
benchmarks/serve-score.png; otherwise screenshots go to the test's temporary folder.
"""

import importlib.util
import os
import re
import shutil
from pathlib import Path

import pytest

from helpers import served, start_server, tiny_run

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 20                      # seconds: the most any one step of the page may take
PRIME = "the cat "
SCORED = "the cat sat on the mat\nand the dog ran far away home"


def missing_browser():
    """Why the browser cannot run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(path):
            return f"{path} is missing: apt-get install chromium chromium-driver"
    if importlib.util.find_spec("selenium") is None:
        return "selenium is missing: pip install -e '.[test]'"
    return None


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium; skipped where it is missing, unless CHARLSTM_REQUIRE_BROWSER is set
    (then a failure)."""
    why = missing_browser()
    if why and os.environ.get("CHARLSTM_REQUIRE_BROWSER"):
        pytest.fail(f"CHARLSTM_REQUIRE_BROWSER is set but {why}")
    if why:
        pytest.skip(f"browser test: {why}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    # Both paths given: Selenium Manager is never asked, so nothing is downloaded.
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--no-proxy-server"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot_dir(tmp_path):
    if os.environ.get("CHARLSTM_SCREENSHOTS"):
        return Path(__file__).resolve().parents[1] / "benchmarks"
    return tmp_path


def until(driver, condition, what):
    """Wait at most WAIT seconds for condition(driver) to be truthy; returns its value. A timeout
    names what was awaited and the page's error line."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait
    try:
        return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(condition)
    except TimeoutException:
        error = driver.find_element("id", "error").text
        pytest.fail(f"waited {WAIT} s for {what}; the page's error line: {error!r}")


def by_id(driver, id_):
    return driver.find_element("id", id_)


def tab(driver, name):
    driver.find_element("css selector", f'[data-tab="{name}"]').click()


def type_into(driver, id_, text):
    box = by_id(driver, id_)
    box.clear()
    box.send_keys(text)


def test_page_generates_scores_writes_and_charts_a_run(tmp_path, browser):
    driver = browser
    shots = screenshot_dir(tmp_path)
    with served(tmp_path, run=True) as base_url:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", base_url), base_url
        driver.get(base_url + "/")
        until(driver, lambda d: by_id(d, "model").get_attribute("value"), "the model picker")
        assert "parameters" in by_id(driver, "model-info").text

        # Generate: the continuation streams in after the prime
        type_into(driver, "gen-prime", PRIME)
        by_id(driver, "gen-length").clear()
        by_id(driver, "gen-length").send_keys("300")
        by_id(driver, "gen-go").click()
        until(driver, lambda d: len(by_id(d, "gen-output").text) > len(PRIME.strip()),
              "streamed text after the prime")
        until(driver, lambda d: by_id(d, "gen-status").text.startswith("done"), "the done event")
        assert by_id(driver, "gen-output").text.startswith(PRIME.strip())
        assert len(by_id(driver, "gen-text").get_attribute("textContent")) == 300
        assert driver.save_screenshot(str(shots / "serve-page.png"))

        # Score: one shaded span per character, each with its probability and guesses
        tab(driver, "score")
        # the hint is one line (.detail keeps whitespace: a break in the HTML showed mid-sentence)
        assert by_id(driver, "score-detail").text == \
            "Hover a character to see its probability and the model's guesses."
        type_into(driver, "score-text", SCORED)
        by_id(driver, "score-go").click()
        spans = until(driver, lambda d: d.find_elements("css selector", "#score-output .ch"),
                      "the scored characters")
        assert len(spans) == len(SCORED)
        backgrounds = [s.value_of_css_property("background-color") for s in spans]
        shaded = [i for i, b in enumerate(backgrounds)
                  if b not in ("rgb(255, 255, 255)", "rgba(255, 255, 255, 1)",
                               "rgba(0, 0, 0, 0)")]
        assert shaded, backgrounds
        title = spans[shaded[-1]].get_attribute("title")
        assert re.search(r"p = [01]\.\d{4}", title) and "guesses:" in title, title
        from selenium.webdriver import ActionChains
        ActionChains(driver).move_to_element(spans[shaded[-1]]).perform()
        until(driver, lambda d: by_id(d, "score-detail").text == title, "the hovered details")
        assert "bits/char" in by_id(driver, "score-summary").text
        assert driver.save_screenshot(str(shots / "serve-score.png"))

        # Write: suggestions appear while typing; a click appends one and asks again
        tab(driver, "write")
        type_into(driver, "write-text", "the ca")
        options = until(driver, lambda d: d.find_elements("css selector", "#write-options .option"),
                        "suggestion buttons")
        assert 1 < len(options) <= 8
        char = options[0].get_attribute("data-char")
        options[0].click()
        until(driver, lambda d: by_id(d, "write-text").get_attribute("value") == "the ca" + char,
              "the suggestion appended")

        # Run: the loss chart of the run folder the model comes from
        tab(driver, "run")
        until(driver, lambda d: d.find_elements("css selector", "#run-chart polyline.train"),
              "the train loss line")
        assert re.search(r"best\.npz reloaded at step \d+", by_id(driver, "run-reloaded").text)
        assert "train" in by_id(driver, "run-latest").text

        assert not by_id(driver, "error").is_displayed(), by_id(driver, "error").text
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def test_a_server_gone_mid_stream_is_said_so_not_blamed_on_the_page(tmp_path, browser):
    """A server killed while it streams cut the fetch's body: the page said "error in the page:
    network error". It says the connection was lost and what to do, and so does the next
    Generate, which cannot reach the server at all."""
    driver = browser
    proc, base_url = start_server([tiny_run(tmp_path / "served"), "--max-length", "100000"])
    try:
        driver.get(base_url + "/")
        until(driver, lambda d: by_id(d, "model").get_attribute("value"), "the model picker")
        type_into(driver, "gen-length", "100000")
        by_id(driver, "gen-go").click()
        until(driver, lambda d: re.search(r"generating… [1-9]", by_id(d, "gen-status").text),
              "the first streamed characters")
    finally:
        proc.kill()                      # as a crash would: no error event, the body cut short
        proc.communicate(timeout=30)
    until(driver, lambda d: by_id(d, "error").is_displayed(), "the error line")
    line = by_id(driver, "error").text
    assert re.match(r"the connection to the server was lost after \d+ chars", line), line
    assert "is charlstm serve still running?" in line and "error in the page" not in line, line
    assert not by_id(driver, "gen-go").get_attribute("disabled")

    by_id(driver, "gen-go").click()
    until(driver, lambda d: by_id(d, "error").text.startswith("cannot reach the server"),
          "the next Generate's error line")
    assert "is charlstm serve still running?" in by_id(driver, "error").text
    assert not by_id(driver, "gen-go").get_attribute("disabled")
    # the page's own mistakes go to the console; a lost server is not one of them
    page_errors = [e["message"] for e in driver.get_log("browser")
                   if e["level"] == "SEVERE" and "app.js" in e.get("message", "")]
    assert not page_errors, page_errors
