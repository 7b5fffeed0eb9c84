"""The playground in a real headless browser (Debian's chromium and chromium-driver, through selenium)."""

from __future__ import annotations

import shutil

import pytest
import torch

pytest.importorskip("fastapi")
webdriver = pytest.importorskip("selenium.webdriver")

import steerlab as sl
from steerlab.serve import Registry, start
from tiny import tiny_model

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs chromium and chromium-driver (apt-get)")


def browser(width: int = 1280, height: int = 900):
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    return driver


@pytest.fixture(scope="module")
def served():
    model = tiny_model("llama")
    v = torch.randn(64, generator=torch.Generator().manual_seed(1))
    d = sl.Direction({1: v, 2: -v}, meta={"layer": 2})
    reg = Registry(model, recipes={"happy": sl.Steering([sl.Add(d, alpha=4.0, layers=[1])])},
                   directions={"mood": d})
    with start(model, reg) as srv:
        yield srv, model


def test_playground_runs_steered_and_unsteered_side_by_side(served):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    srv, model = served
    driver = browser()
    try:
        wait = WebDriverWait(driver, 30)
        driver.get(srv.base + "/")
        wait.until(lambda d: d.find_element(By.ID, "model").text == "model: " + model.name)
        slider = wait.until(lambda d: d.find_element(By.ID, "scale-happy"))
        slider.click()  # focus it, then move it with the keyboard as a person would
        slider.send_keys(Keys.END)
        assert driver.find_element(By.ID, "scale-happy").get_attribute("value") == "2"
        driver.find_element(By.ID, "read-mood").click()
        code = driver.find_element(By.ID, "code").text
        assert "extra_body" in code and '"scale": 2' in code.replace(":2", ": 2")
        prompt = driver.find_element(By.ID, "prompt")
        prompt.clear()
        prompt.send_keys("hello there")
        driver.find_element(By.ID, "run").click()
        wait.until(lambda d: d.find_element(By.ID, "status").text in ("done",) or "error" in
                   d.find_element(By.ID, "status").get_attribute("class"))
        assert driver.find_element(By.ID, "status").text == "done"
        steered = driver.find_element(By.ID, "steered").get_attribute("textContent")
        unsteered = driver.find_element(By.ID, "unsteered").get_attribute("textContent")
        assert steered and unsteered and steered != unsteered
        # the columns hold what the API gives for the same settings
        ref = model.generate(["hello there"], max_new_tokens=48)
        assert unsteered == ref.texts[0]
        coloured = driver.find_elements(By.CSS_SELECTOR, "#steered span[title^='mood:']")
        assert coloured  # read-out scores are shown over the tokens
        driver.find_element(By.ID, "show-curl").click()
        assert driver.find_element(By.ID, "code").text.startswith("curl " + srv.url + "/chat/completions")
    finally:
        driver.quit()
