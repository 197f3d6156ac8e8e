"""The score lookup page, driven end to end in headless Chromium against a live server."""

from __future__ import annotations

import os
import shutil

import httpx
import pytest

from tests.conftest import in_ci
from tests.serving.conftest import TOKEN, live_server

CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage")


def _browser_paths() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        msg = ("headless Chromium is not installed (need chromium and chromedriver); "
               "run scripts/ensure-chromium.sh")
        if in_ci():
            pytest.fail(msg)
        pytest.skip(msg)
    return chromium, driver


@pytest.fixture()
def browser(tmp_path):
    chromium, driver_path = _browser_paths()
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager reach the network
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in CHROME_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path / 'chrome-profile'}")
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def test_webpage_scores_and_shows_lineage_and_curve(make_app, browser, champion):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    app, ledger = make_app()
    with live_server(app) as base:
        # a score made through the API, looked up on the page
        made = httpx.post(f"{base}/v1/scores", json={"patient_id": "gbsg2-00005"},
                          headers={"Authorization": f"Bearer {TOKEN}"}).json()
        browser.get(f"{base}/")
        wait = WebDriverWait(browser, 30)
        wait.until(EC.presence_of_element_located((By.ID, "token"))).send_keys(TOKEN)

        browser.find_element(By.ID, "score-id").send_keys(made["score_id"])
        browser.find_element(By.ID, "lookup-btn").click()
        wait.until(EC.visibility_of_element_located((By.ID, "result")))
        wait.until(EC.text_to_be_present_in_element((By.ID, "r-score-id"), made["score_id"]))
        assert browser.find_element(By.ID, "r-patient").text == "gbsg2-00005"
        assert browser.find_element(By.ID, "r-risk").text == f"{made['risk_score']:.4f}"
        points = browser.find_elements(By.CSS_SELECTOR, "#curve circle.curve-point")
        assert [int(p.get_attribute("data-days")) for p in points] == [365, 1095, 1825]
        line = browser.find_element(By.ID, "curve-line").get_attribute("points").split()
        assert len(line) == 4  # S(0) = 1 plus one point per horizon
        ys = [float(p.split(",")[1]) for p in line]
        assert ys == sorted(ys)  # survival never rises: y grows downwards on screen
        lineage = {r.find_elements(By.TAG_NAME, "td")[0].text: r.find_elements(By.TAG_NAME, "td")[1].text
                   for r in browser.find_elements(By.CSS_SELECTOR, "#lineage tbody tr")}
        assert lineage["model.run_id"] == champion.run_id
        assert lineage["inputs.feature_service"] == "prognosis_v1"
        assert "inputs.feature_event_timestamps.clinical" in lineage and "params_hash" in lineage

        # score a patient from the page itself; the ledger gets it
        browser.find_element(By.ID, "patient-id").send_keys("gbsg2-00007")
        browser.find_element(By.ID, "score-btn").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "r-patient"), "gbsg2-00007"))
        assert ledger.count() == 2 and ledger.verify().ok

        # a bad lookup shows the API's reason
        box = browser.find_element(By.ID, "score-id")
        box.clear()
        box.send_keys("b" * 32)
        browser.find_element(By.ID, "lookup-btn").click()
        wait.until(EC.visibility_of_element_located((By.ID, "error")))
        assert browser.find_element(By.ID, "error").text == f"404: no score {'b' * 32} in the ledger"
