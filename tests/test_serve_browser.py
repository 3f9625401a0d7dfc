"""gan-audit serve in a real browser: headless Chromium driven by Selenium (system chromedriver).

One walk through the app on the served demo fixture, by keyboard: open the printed address,
filter the findings, record a review, label 6 generated images with the number keys, re-render
the report; then the review log verifies and the labels file holds every answer. A screenshot
of each page goes to ``$GAN_AUDIT_TEST_ARTIFACTS`` (default ``.test-artifacts/``, ignored by
git). Skipped, saying why, where Chromium, chromedriver or Selenium are missing.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the serve extra is not installed")
pytest.importorskip("uvicorn", reason="the serve extra is not installed")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")

from selenium.common.exceptions import (  # noqa: E402
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from audit.labels import read_labels  # noqa: E402
from audit.report.review import verify_review_log  # noqa: E402
from audit.serve.server import start_in_thread  # noqa: E402
from tests.test_serve import demo_run  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
N_IMAGES = 6  # labelled by keyboard, two concepts each (every key used 4 times; 20 took 8 s more)
WAIT_S = 30


def _artifacts() -> Path:
    out = Path(os.environ.get("GAN_AUDIT_TEST_ARTIFACTS") or ROOT / ".test-artifacts")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _driver(profile: Path):
    for path, what in ((CHROMEDRIVER, "chromedriver"), (CHROMIUM, "chromium")):
        if not (Path(path).exists() or shutil.which(path)):
            pytest.skip(f"{what} not found at {path}: apt-get install -y chromium "
                        f"chromium-driver (CI's .ci/run does), or set "
                        f"{what.upper()}=/path/to/it")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update",
                f"--user-data-dir={profile}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        return webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    except WebDriverException as exc:
        pytest.skip(f"Chromium could not be started by {CHROMEDRIVER}: {exc.msg}")


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[Path, str]]:
    run = demo_run(tmp_path_factory.mktemp("serve") / "run")
    info, server, thread = start_in_thread(run)
    yield run, info.url
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = _driver(tmp_path_factory.mktemp("chromium-profile"))
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


def _shot(driver, name: str) -> None:
    """A full-page screenshot (the window grown to the page's height) as an artefact."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(int(height) + 160, 800), 6000))  # + the window frame
    driver.save_screenshot(str(_artifacts() / f"serve-{name}.png"))
    driver.set_window_size(1280, 1000)


def _wait(driver, condition):
    try:
        return WebDriverWait(driver, WAIT_S, ignored_exceptions=(
            NoSuchElementException, StaleElementReferenceException)).until(condition)
    except TimeoutException:
        driver.save_screenshot(str(_artifacts() / "serve-timeout.png"))
        raise AssertionError(f"timed out on {driver.current_url}:\n"
                             f"{driver.find_element(By.TAG_NAME, 'body').text[:2000]}") from None


def _tab_to(driver, element, limit: int = 80) -> None:
    """Move the keyboard focus with Tab until ``element`` has it (as a keyboard user does)."""
    for _ in range(limit):
        if driver.switch_to.active_element == element:
            return
        ActionChains(driver).send_keys(Keys.TAB).perform()
    raise AssertionError(f"Tab never reached {element.get_attribute('outerHTML')[:120]}")


def _console_errors(driver) -> list[str]:
    try:
        return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    except WebDriverException:  # a driver without logs
        return []


def test_review_and_label_by_keyboard_in_chromium(served, browser):
    run, url = served
    d = browser
    d.get(url)  # the printed address: the token becomes a cookie and leaves the address
    _wait(d, ec.presence_of_element_located((By.ID, "h-verdicts")))
    assert "token=" not in d.current_url
    _shot(d, "1-summary")

    # the findings, filtered to high severity with the keyboard (type into the select, Tab
    # to the Filter button, Enter)
    d.get(url.split("?")[0] + "findings")
    total = len(d.find_elements(By.CSS_SELECTOR, "tr[data-finding]"))
    severity = d.find_element(By.ID, "filter-severity")
    _tab_to(d, severity)
    ActionChains(d).send_keys("h").perform()
    _tab_to(d, d.find_element(By.XPATH, "//form[@class='filters']//button"))
    ActionChains(d).send_keys(Keys.ENTER).perform()
    _wait(d, ec.url_contains("severity=high"))
    rows = d.find_elements(By.CSS_SELECTOR, "tr[data-finding]")
    assert 0 < len(rows) < total
    assert all("high" in r.text for r in rows)
    _shot(d, "2-findings-filtered")

    # a review, typed and submitted from the keyboard
    first = rows[0].get_attribute("data-finding")
    link = rows[0].find_element(By.TAG_NAME, "a")
    _tab_to(d, link)
    link.send_keys(Keys.ENTER)
    _wait(d, ec.presence_of_element_located((By.ID, "review-form")))
    radio = d.find_element(By.ID, "status-accepted")
    _tab_to(d, radio)
    radio.send_keys(Keys.SPACE)
    for field, text in (("note", "Checked the grids in the browser."),
                        ("mitigation", "rebalance the training mix"), ("owner", "ML team"),
                        ("reviewer", "B. Rowser")):
        d.find_element(By.ID, field).send_keys(text)
    d.find_element(By.ID, "reviewer").send_keys(Keys.ENTER)  # submits the form
    _wait(d, ec.text_to_be_present_in_element((By.ID, "messages"), "Recorded"))
    assert "B. Rowser" in d.find_element(By.ID, "history").text
    imgs = d.find_elements(By.CSS_SELECTOR, "main img")
    assert imgs and all(i.get_attribute("alt").strip() for i in imgs)
    assert all(d.execute_script("return arguments[0].naturalWidth", i) > 0 for i in imgs)
    _shot(d, "3-finding-reviewed")

    _label_by_keyboard(d, url)
    _rerender(d, url)

    entries = [line for line in (run / "review.jsonl").read_text().splitlines() if line]
    assert len(entries) == 1 and first in entries[0]
    assert verify_review_log(run / "review.jsonl").ok
    labels = read_labels(run)
    assert len(labels) == 2 * N_IMAGES and set(labels["labeller"]) == {"K. Eyboard"}
    assert labels["image_id"].nunique() == N_IMAGES
    assert _console_errors(d) == []


def _label_by_keyboard(d, url: str) -> None:
    """Label N_IMAGES images (two concepts each) with the number keys, one answer per page."""
    d.get(url.split("?")[0] + "label")
    name = _wait(d, ec.presence_of_element_located((By.ID, "labeller")))
    name.send_keys("K. Eyboard", Keys.ENTER)
    _wait(d, ec.presence_of_element_located((By.ID, "label-image")))
    _shot(d, "4-labelling")
    keys = ["1", "2", "0"]
    for k in range(2 * N_IMAGES):
        before = d.find_element(By.ID, "progress-text").text
        d.find_element(By.TAG_NAME, "body").send_keys(keys[k % len(keys)])
        _wait(d, lambda drv, b=before: drv.find_element(By.ID, "progress-text").text != b)
    text = d.find_element(By.ID, "progress-text").text
    assert re.match(rf"{2 * N_IMAGES} of \d+ answers", text), text
    assert f"{N_IMAGES} of" in text
    _shot(d, "5-labelling-progress")


def _rerender(d, url: str) -> None:
    d.get(url.split("?")[0])
    button = d.find_element(By.XPATH, "//button[normalize-space()='Re-render the report']")
    _tab_to(d, button)
    button.send_keys(Keys.ENTER)
    _wait(d, ec.text_to_be_present_in_element((By.ID, "messages"), "Re-rendered"))
    d.get(url.split("?")[0] + "report")
    assert "Checked the grids in the browser." in d.page_source
    _shot(d, "6-report")
