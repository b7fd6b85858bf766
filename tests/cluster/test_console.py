"""The web console (/ui/) in a real browser: Debian's chromium and chromium-driver, driven
by Selenium in headless mode, against real node processes (a three-node cluster for the
cluster page). Each flow is what a user does: sign in, create, edit (and see the change
arrive in a second browser session through the live feed), view a value, history and diff,
roll back, delete and undelete, locked entries, the audit trail and its chain, backups down
and up, sign-out and the idle timeout, a stopped node turning unhealthy, and the tokens
mode's login. Every page is photographed at 1280x800 and 390x844 into
$SECURECONF_ARTIFACTS/console (default .artifacts/console); the browser's log must hold no
console error and no failed request beyond the ones a flow provokes on purpose."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from common.nodeproc import wait_until

USER_KEY = "console-user-key-01"
OTHER_KEY = "someone-elses-key-1"
ARTIFACTS = Path(os.environ.get("SECURECONF_ARTIFACTS", Path(__file__).resolve().parents[2] / ".artifacts")) / "console"
VIEWPORTS = {"desktop": (1280, 800, False), "phone": (390, 844, True)}


class Browser:
    """One headless Chromium session (its own profile: a second browser, not a second tab)."""

    def __init__(self, base_url: str, downloads: Path):
        options = webdriver.ChromeOptions()
        options.binary_location = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
        for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800",
                         "--disable-gpu", "--no-first-run", "--disable-extensions"):
            options.add_argument(argument)
        options.add_experimental_option("prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False})
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        service = webdriver.ChromeService(executable_path=os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver"))
        self.driver = webdriver.Chrome(options=options, service=service)
        self.driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
        self.base = base_url
        self.downloads = downloads
        self.failed: list[tuple[int, str]] = []
        self.console: list[str] = []
        self.viewport("desktop")

    def viewport(self, name: str) -> None:
        width, height, mobile = VIEWPORTS[name]
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                    {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})

    def wait(self, condition, timeout: float = 10):
        return WebDriverWait(self.driver, timeout).until(condition)

    def visible(self, css: str, timeout: float = 10):
        return self.wait(EC.visibility_of_element_located((By.CSS_SELECTOR, css)), timeout)

    def text_in(self, css: str, text: str, timeout: float = 10) -> None:
        self.wait(EC.text_to_be_present_in_element((By.CSS_SELECTOR, css), text), timeout)

    def find(self, css: str):
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def fill(self, css: str, value: str) -> None:
        el = self.find(css)
        el.clear()
        el.send_keys(value)

    def go(self, route: str) -> None:
        self.driver.get(f"{self.base}/ui/#/{route}")

    def sign_in(self, user_key: str = USER_KEY, api_key: str | None = None, username: str | None = None,
                password: str | None = None, remember: bool = False) -> None:
        self.driver.get(f"{self.base}/ui/")
        self.visible("#userkey")
        if username:
            self.fill("#username", username)
            self.fill("#password", password)
        if api_key:
            self.fill("#apikey", api_key)
        if remember:
            self.find("#remember").click()
        self.fill("#userkey", user_key)
        self.find("#userkey").send_keys(Keys.ENTER)  # the form submits from the keyboard
        self.visible("#page h1")

    def new_entry(self, key: str, value: str, environment: str | None = None, category: str | None = None,
                  json_value: bool = False) -> None:
        """Opens the configurations page's new-entry form, fills it in and submits it."""
        self.visible("#new-entry").click()
        self.fill("#e-key", key)
        if environment is not None:
            self.fill("#e-environment", environment)
        if category is not None:
            self.fill("#e-category", category)
        self.fill("#e-value", value)
        if json_value:
            self.find("#e-json").click()
        self.find("#entry-form button[type=submit]").click()

    def confirm(self) -> None:
        self.visible("#confirm[open] #confirm-ok").click()
        self.wait(lambda d: not d.find_element(By.ID, "confirm").get_attribute("open"))

    def shoot(self, name: str) -> list[Path]:
        """The current page at both viewports (full height), back at desktop size after."""
        shots = []
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for viewport in VIEWPORTS:
            self.viewport(viewport)
            self.driver.execute_script("window.scrollTo(0, 0)")
            time.sleep(0.3)
            width = VIEWPORTS[viewport][0]
            overflow = self.driver.execute_script("return document.documentElement.scrollWidth")
            assert overflow <= width + 1, f"{name} is wider than the {viewport} viewport ({overflow} px > {width} px)"
            path = ARTIFACTS / f"{name}-{viewport}.png"
            self.driver.save_screenshot(str(path))
            shots.append(path)
        self.viewport("desktop")
        return shots

    def collect_logs(self) -> None:
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.responseReceived":
                response = message["params"]["response"]
                if response["status"] >= 400:
                    self.failed.append((response["status"], response["url"].split("?")[0].replace(self.base, "")))
            elif message.get("method") == "Network.loadingFailed" and not message["params"].get("canceled"):
                self.failed.append((0, message["params"].get("errorText", "")))
        for entry in self.driver.get_log("browser"):
            if entry["level"] == "SEVERE" and "Failed to load resource" not in entry["message"]:
                self.console.append(entry["message"])

    def quit(self) -> None:
        try:
            self.collect_logs()
        finally:
            self.driver.quit()


@pytest.fixture
def browsers(tmp_path):
    opened: list[Browser] = []

    def open_browser(node) -> Browser:
        downloads = tmp_path / f"downloads-{len(opened)}"
        downloads.mkdir()
        b = Browser(node.url, downloads)
        opened.append(b)
        return b
    yield open_browser
    for b in opened:
        b.quit()


def no_errors(*browsers: Browser, expected: list[tuple[int, str]] = ()) -> None:
    """No console error; failed requests only those a flow provoked on purpose."""
    for b in browsers:
        b.collect_logs()
        assert b.console == [], b.console
        assert sorted(b.failed) == sorted(expected), b.failed
        expected = []


def test_the_console_is_served_with_a_strict_policy_and_no_cookie(factory):
    node = factory.cluster(1, "replica", {"OSC_CLUSTER_ENABLED": "false"})[0]
    for path in ("/ui/", "/ui", "/ui/app.js", "/ui/app.css", "/ui/config.json"):
        r = requests.get(node.url + path, timeout=5)
        assert r.status_code == 200, (path, r.status_code)
        csp = r.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert r.headers["X-Frame-Options"] == "DENY" and r.headers["X-Content-Type-Options"] == "nosniff"
        assert "Set-Cookie" not in r.headers
    assert requests.get(node.url + "/ui/app.js", timeout=5).headers["Content-Type"].startswith("text/javascript")
    assert requests.get(node.url + "/ui/../configs", timeout=5).status_code in (401, 403, 404)
    missing = requests.get(node.url + "/ui/nothing.js", timeout=5)
    assert missing.status_code == 404 and "detail" in missing.json()
    assert "<script>" not in requests.get(node.url + "/ui/", timeout=5).text, "no inline script"
    config = requests.get(node.url + "/ui/config.json", timeout=5).json()
    assert config["auth_mode"] == "apikey" and config["api_key_required"] is True and config["idle_minutes"] == 15


def test_a_user_manages_configurations_in_the_browser(factory, browsers):
    node = factory.cluster(1, "replica", {"OSC_CLUSTER_ENABLED": "false"})[0]
    a, b = browsers(node), browsers(node)

    # Sign in (the API key and the user key); the keys are in no cookie and no storage.
    a.sign_in(api_key=node.api_key)
    a.text_in("#feed-state", "Connected")
    assert a.driver.execute_script("return document.cookie") == ""
    assert a.driver.execute_script("return sessionStorage.length") == 0
    assert USER_KEY not in json.dumps(a.driver.execute_script("return Object.assign({}, localStorage)"))
    a.shoot("dashboard")

    # Create two entries: a text value and a JSON value.
    a.go("configs")
    a.new_entry("db.password", "first-secret", environment="prod", category="database")
    a.text_in("#list", "db.password")
    a.new_entry("feature.flags", '{"beta": true, "limit": 3}', environment="prod", json_value=True)
    a.text_in("#list", "feature.flags")
    assert node.request("GET", "/configs/feature.flags", USER_KEY, params={"environment": "prod"}).json()["value"] == {"beta": True, "limit": 3}
    # An entry under another user key is a count, never a name.
    assert node.request("POST", "/configs", OTHER_KEY, json={"key": "not.yours", "value": "x", "environment": "prod"}).status_code == 201
    a.find("#filters button[type=submit]").click()
    a.text_in("#locked", "1 entry is locked")
    assert "not.yours" not in a.driver.page_source
    # Validation: invalid JSON is refused in the page; a duplicate key gets the node's detail.
    a.new_entry("broken", "{not json", json_value=True)
    a.text_in("#entry-form .error", "not valid JSON")
    assert node.request("GET", "/configs/broken", USER_KEY).status_code == 404
    a.fill("#e-key", "db.password")
    a.fill("#e-environment", "prod")
    a.find("#e-json").click()
    a.fill("#e-value", "again")
    a.find("#entry-form button[type=submit]").click()
    a.text_in("#entry-form .error", "already exists")
    a.shoot("configurations")

    # A second browser on the dashboard sees the edit arrive through the live feed.
    b.sign_in(api_key=node.api_key)
    b.text_in("#feed-state", "Connected")
    a.go("configs")
    a.visible('tr[data-key="db.password"] button[aria-label="Edit db.password"]').click()
    a.fill("#e-value", "second-secret")
    a.find("#entry-form button[type=submit]").click()
    a.text_in("[role=status]", "Saved prod/db.password")
    b.text_in("#feed", "prod/db.password", timeout=10)
    assert b.find('#feed li[data-key="db.password"]').get_attribute("data-kind") == "updated"
    assert "second-secret" not in b.driver.page_source, "the feed names changes, it does not show values"
    # A change to an entry under another user key is counted in the feed, never named.
    assert node.request("POST", "/configs", OTHER_KEY, json={"key": "other.secret", "value": "y", "environment": "prod"}).status_code == 201
    b.text_in("#feed-locked", "1 change to entries your user key does not open")
    assert "other.secret" not in b.driver.page_source
    b.text_in("#d-rate", "requests", timeout=15)  # two samples of /metrics: the chart has a line
    b.shoot("dashboard-live-feed")

    # View a value, pretty and raw.
    a.visible('button[aria-label="View feature.flags"]').click()
    a.text_in("#value-pretty", '"beta": true')
    a.find("#toggle-raw").click()
    assert a.visible("#value-raw").text == '{"beta":true,"limit":3}'

    # History: versions with actor and time, a diff, a rollback with confirmation.
    a.find('a[aria-label="History of db.password"]').click()
    a.visible('tr[data-version="2"]')
    assert "uk:" in a.find('tr[data-version="1"]').text, "the actor"
    a.find("#diff-form button").click()
    a.text_in("#diff", '"op":"replace"')
    a.shoot("history")
    a.find('button[aria-label="Roll back to version 1"]').click()
    a.confirm()
    a.text_in("[role=status]", "Rolled back to version 1")
    assert node.request("GET", "/configs/db.password", USER_KEY, params={"environment": "prod"}).json()["value"] == "first-secret"

    # Delete with confirmation, then undelete from the history.
    a.go("configs")
    a.visible('button[aria-label="Delete db.password"]').click()
    a.find("#confirm-cancel").click()
    assert node.request("GET", "/configs/db.password", USER_KEY, params={"environment": "prod"}).status_code == 200, "cancel deletes nothing"
    a.find('button[aria-label="Delete db.password"]').click()
    a.confirm()
    a.text_in("[role=status]", "Deleted prod/db.password")
    assert node.request("GET", "/configs/db.password", USER_KEY, params={"environment": "prod"}).status_code == 404
    a.driver.get(f"{node.url}/ui/#/history?environment=prod&key=db.password")
    a.visible('button[aria-label="Undelete to version 2"]').click()
    a.confirm()
    a.text_in("[role=status]", "Brought back")
    assert node.request("GET", "/configs/db.password", USER_KEY, params={"environment": "prod"}).json()["value"] == "second-secret"
    # The longest key a node takes still fits a phone's width on its history page.
    long_key = "long." + "x" * 250
    assert node.request("POST", "/configs", USER_KEY, json={"key": long_key, "value": 1, "environment": "wide"}).status_code == 201
    a.driver.get(f"{node.url}/ui/#/history?environment=wide&key={long_key}")
    a.visible('tr[data-version="1"]')
    a.viewport("phone")
    assert a.driver.execute_script("return document.documentElement.scrollWidth") <= 390
    a.viewport("desktop")
    assert node.request("DELETE", f"/configs/{long_key}", USER_KEY, params={"environment": "wide"}).status_code == 200

    # The audit trail: a search, and the chain verified.
    a.go("audit")
    a.fill("#a-action", "rollback")
    a.find("#audit-form button[type=submit]").click()
    a.text_in("#audit-results", "2 records")
    assert all(r.get_attribute("data-action") == "rollback" for r in a.driver.find_elements(By.CSS_SELECTOR, "#audit-results tbody tr"))
    a.find("#verify").click()
    a.text_in("#verify-result", "Valid")
    a.shoot("audit")

    # Backups: one created and downloaded, then imported back over a changed value.
    a.go("backups")
    a.fill("#b-password", "backup-pass-1")
    a.find("#backup-form button[type=submit]").click()
    a.text_in("#backup-result", "2 entries")
    assert wait_until(lambda: any(p.suffix == ".json" for p in a.downloads.iterdir()), 10)
    backup = next(p for p in a.downloads.iterdir() if p.suffix == ".json")
    assert "second-secret" not in backup.read_text(), "the values travel sealed"
    assert node.request("PUT", "/configs/feature.flags", USER_KEY, params={"environment": "prod"}, json={"value": "changed"}).status_code == 200
    a.find("#i-file").send_keys(str(backup))
    a.fill("#i-password", "backup-pass-1")
    a.find("#i-overwrite").click()
    a.find("#import-form button[type=submit]").click()
    a.text_in("#import-result", "Imported 2 of 2")
    assert node.request("GET", "/configs/feature.flags", USER_KEY, params={"environment": "prod"}).json()["value"] == {"beta": True, "limit": 3}
    a.shoot("backups")

    # The dark theme, and the keyboard: the skip link, then the navigation.
    a.find("#theme").click()
    assert a.driver.execute_script("return document.documentElement.dataset.theme") in ("dark", "light")
    a.go("configs")
    a.visible("#list")
    a.shoot("configurations-theme")
    # A page opens with the focus on its content; the header's controls are a Shift+Tab away.
    assert a.driver.switch_to.active_element.get_attribute("id") == "main"
    keys = ActionChains(a.driver)
    reached = []
    for _ in range(3):
        keys.key_down(Keys.SHIFT).send_keys(Keys.TAB).key_up(Keys.SHIFT).perform()
        reached.append(a.driver.switch_to.active_element.get_attribute("textContent"))
    assert reached == ["Sign out", "Theme", "Backups"], reached
    keys.send_keys(Keys.ENTER).perform()
    a.text_in("#page h1", "Backups")
    unlabeled = a.driver.execute_script(
        "return [...document.querySelectorAll('input, select, textarea')].filter(e => !e.labels || !e.labels.length).map(e => e.id)")
    assert unlabeled == [], unlabeled

    # Sign out drops the keys; so does the idle timeout (the page's clock moved past it).
    a.find("#signout").click()
    a.visible("#userkey")
    assert a.driver.execute_script("return sessionStorage.length") == 0
    a.sign_in(api_key=node.api_key, remember=True)
    assert a.driver.execute_script("return sessionStorage.length") == 1, "kept in the tab only when asked"
    # A reload keeps a remembered session, but is no activity: one idle too long is not restored.
    a.driver.refresh()
    a.visible("#page h1")
    a.driver.execute_script(
        "const s = JSON.parse(sessionStorage.getItem('secureconf.session')); s.lastActivity -= 16 * 60000;"
        "sessionStorage.setItem('secureconf.session', JSON.stringify(s));")
    a.driver.refresh()
    a.visible("#userkey")
    assert a.driver.execute_script("return sessionStorage.length") == 0
    # A route named like an object's built-in property is no page (the dashboard opens).
    a.sign_in(api_key=node.api_key, remember=True)
    a.driver.get(f"{node.url}/ui/#/constructor")
    a.text_in("#page h1", "Dashboard")
    a.find('#nav a[data-page="audit"]').click()
    a.text_in("#page h1", "Audit trail")
    a.driver.execute_script("const now = Date.now; Date.now = () => now() + 16 * 60000;")
    a.visible("#signin-error", timeout=15)
    assert "without activity" in a.find("#signin-error").text
    assert a.driver.execute_script("return sessionStorage.length") == 0
    no_errors(a, b, expected=[(400, "/configs")])


def test_the_cluster_page_shows_a_stopped_node_turn_unhealthy(factory, browsers):
    cluster = factory.cluster(3, "replica")
    cluster.wait_healthy(timeout=15)
    n0 = cluster[0]
    for i in range(3):
        assert n0.request("POST", "/configs", USER_KEY, json={"key": f"k{i}", "value": i}).status_code == 201
    cluster.wait_converged()
    browser = browsers(n0)
    browser.sign_in(api_key=n0.api_key)
    browser.go("cluster")
    browser.wait(lambda d: len(d.find_elements(By.CSS_SELECTOR, '#nodes tr[data-healthy="true"]')) == 3)
    browser.wait(lambda d: [e.text for e in d.find_elements(By.CSS_SELECTOR, "#distribution tbody tr td:last-child")] == ["3", "3", "3"])
    browser.shoot("cluster")
    stopped = cluster[2]
    stopped.stop()
    started = time.monotonic()
    try:
        browser.visible(f'#nodes tr[data-node="{stopped.node_id}"][data-healthy="false"]', timeout=20)
    except TimeoutException:
        pytest.fail("the stopped node never showed as unhealthy")
    print(f"stopped node shown unhealthy after {time.monotonic() - started:.1f} s")
    assert "unhealthy" in browser.find(f'#nodes tr[data-node="{stopped.node_id}"]').text
    browser.shoot("cluster-node-down")
    no_errors(browser)


def test_tokens_mode_signs_in_with_a_password_and_signing_out_revokes_the_token(factory, browsers):
    import subprocess
    from harness import secureconf_binary
    node = factory.cluster(1, "replica", {"OSC_CLUSTER_ENABLED": "false", "OSC_AUTH_MODE": "tokens"})[0]
    password = "console-admin-pass"
    r = subprocess.run([str(secureconf_binary()), "users", "add", "root", "--role", "admin"], cwd=node.workdir,
                       env=dict(node.env, SECURECONF_PASSWORD=password), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    browser = browsers(node)
    browser.sign_in(username="root", password=password, remember=True)
    assert browser.find("#who").text == "Signed in as user:root"
    token = json.loads(browser.driver.execute_script("return sessionStorage.getItem('secureconf.session')"))["token"]
    assert requests.get(node.url + "/auth/me", headers={"Authorization": "Bearer " + token}, timeout=5).status_code == 200
    browser.go("configs")
    browser.new_entry("api.token", "t0ken")
    browser.text_in("#list", "api.token")
    browser.go("audit")
    browser.text_in("#audit-results", "user:root")
    browser.find("#signout").click()
    browser.visible("#userkey")
    assert wait_until(lambda: requests.get(node.url + "/auth/me", headers={"Authorization": "Bearer " + token}, timeout=5).status_code == 401, 5)
    assert browser.driver.execute_script("return sessionStorage.length") == 0
    # A wrong password shows the node's detail.
    browser.fill("#username", "root")
    browser.fill("#password", "not-the-password")
    browser.fill("#userkey", USER_KEY)
    browser.find("#signin-form button[type=submit]").click()
    browser.text_in("#signin-error", "Invalid")
    no_errors(browser, expected=[(401, "/auth/login")])


def test_the_live_feed_reconnects_after_its_node_restarts(factory, browsers):
    node = factory.cluster(1, "replica", {"OSC_CLUSTER_ENABLED": "false"})[0]
    browser = browsers(node)
    browser.sign_in(api_key=node.api_key)
    browser.text_in("#feed-state", "Connected")
    node.stop()
    browser.text_in("#feed-state", "reconnecting", timeout=10)
    node.launch()
    browser.text_in("#feed-state", "Connected", timeout=30)
    assert node.request("POST", "/configs", USER_KEY, json={"key": "after.restart", "value": 1}).status_code == 201
    browser.text_in("#feed", "default/after.restart", timeout=10)
