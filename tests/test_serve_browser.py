"""`groundiff serve` in a real browser: headless Chromium types a prompt, clicks, and waits for one mask
per object. Needs the `web-test` extra and Debian's chromium + chromium-driver; without them the test is
skipped, unless GROUNDIFF_REQUIRE_BROWSER=1 (as in .ci/run) makes the absence a failure.
Set GROUNDIFF_SCREENSHOT=docs/serve.png to refresh the README's screenshot."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
REQUIRED = os.environ.get("GROUNDIFF_REQUIRE_BROWSER") == "1"


def _need(module: str) -> None:
    """Import `module`, or skip (fail when the browser test is required)."""
    if REQUIRED:
        __import__(module)
    else:
        pytest.importorskip(module)


@pytest.fixture(scope="module")
def browser():
    _need("gradio")
    _need("selenium")
    if not (CHROMIUM and DRIVER):
        message = "needs Debian's chromium and chromium-driver (apt install chromium chromium-driver)"
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page_url():
    from groundiff.apps.serve import ServeConfig, serve

    page, url = serve(ServeConfig(port=0), block=False)
    assert url.startswith("http://127.0.0.1:")  # loopback unless told otherwise
    yield url
    page.close()


def test_prompt_to_masks_in_a_browser(browser, page_url, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def text_of(element_id: str) -> str:
        return browser.find_element(By.CSS_SELECTOR, f"#{element_id}").text

    browser.get(page_url)
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#prompt textarea"))
    prompt = browser.find_element(By.CSS_SELECTOR, "#prompt textarea")
    objects = browser.find_element(By.CSS_SELECTOR, "#objects textarea")
    prompt.clear()
    prompt.send_keys("a photograph of a green cross and a yellow triangle")
    # The objects are parsed from the prompt as it is typed.
    WebDriverWait(browser, 30).until(lambda d: objects.get_attribute("value") == "green cross, yellow triangle")
    browser.find_element(By.CSS_SELECTOR, "#run").click()
    WebDriverWait(browser, 120).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#masks img")) == 2)
    assert text_of("status").startswith("Grounded 2 objects")
    assert browser.find_elements(By.CSS_SELECTOR, "#overlay img")
    captions = text_of("masks")
    assert "green cross" in captions and "yellow triangle" in captions
    assert "coco\n.json" in text_of("files")  # Gradio splits the name from its extension
    screenshot = Path(os.environ.get("GROUNDIFF_SCREENSHOT", tmp_path / "serve.png"))
    assert browser.save_screenshot(str(screenshot))

    # Bad input gets a sentence on the page, not a stack trace.
    objects.clear()
    objects.send_keys("green cross, purple star")
    browser.find_element(By.CSS_SELECTOR, "#run").click()
    WebDriverWait(browser, 30).until(lambda d: "not in the prompt" in text_of("status"))
    assert "Traceback" not in browser.page_source


def test_an_uploaded_image_is_grounded_in_the_second_tab(browser, page_url, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from groundiff.miniworld.renderer import render_scene

    picture = tmp_path / "render.png"
    Image.fromarray(render_scene(["green cross", "yellow triangle"], 3).image).save(picture)
    browser.get(page_url)
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.XPATH, "//button[@role='tab']"))
    next(tab for tab in browser.find_elements(By.XPATH, "//button[@role='tab']") if "image" in tab.text).click()
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"))
    browser.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(picture))
    objects = browser.find_element(By.CSS_SELECTOR, "#upload-objects textarea")
    objects.send_keys("green cross, yellow triangle")
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#upload img"))
    browser.find_element(By.CSS_SELECTOR, "#run-upload").click()
    WebDriverWait(browser, 120).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#upload-masks img")) == 2)
    status = browser.find_element(By.CSS_SELECTOR, "#upload-status").text
    assert status.startswith("Grounded 2 objects") and "noise of step -1" in status
