"""The chat UI and the built-in console in a real headless Chromium, through the real gateway's edge listener.

Screenshots of every page (1280×800) go to test-artifacts/screenshots/."""

import shutil
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote_plus

import httpx
import pytest

from finopti.services.ui.browser import CHROMIUM, launch_chromium

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed: "
                                     "pip install -e '.[dev]'")

if not Path(CHROMIUM).exists():
    pytest.skip(reason=f"Chromium is missing at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

SHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def browser():
    profile = Path(tempfile.mkdtemp(prefix="finopti-chromium-"))
    with playwright_api.sync_playwright() as p:
        context = launch_chromium(p, profile)
        yield context
        context.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser):
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    page.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def sign_in(page, edge: str, email: str, path: str = "/") -> None:
    page.goto(f"{edge}{path}")
    page.evaluate("sessionStorage.clear()")
    page.reload()
    page.select_option("#dev-user", email)
    page.click("#sign-in")
    page.wait_for_selector(f"[data-testid=signed-in]:has-text('{email}')")


def test_dev_sign_in_refuses_unknown_users(platform):
    users = httpx.get(f"{platform.edge}/auth/dev-users", timeout=10).json()["users"]
    assert {"email": "erin@finopti.dev", "roles": ["gcloud_admin", "observability_admin"]} in users
    refused = httpx.post(f"{platform.edge}/auth/dev-token", json={"email": "mallory@evil.dev"}, timeout=10)
    assert refused.status_code == 400 and "mallory@evil.dev" in refused.json()["message"]
    token = httpx.post(f"{platform.edge}/auth/dev-token", json={"email": "bob@finopti.dev"}, timeout=10).json()["token"]
    answer = httpx.post(f"{platform.edge}/api/ask", json={"prompt": "find idle instances"},
                        headers={"authorization": f"Bearer {token}"}, timeout=60)
    assert answer.status_code == 200, answer.text


def ask_in_chat(page, edge: str, user: str, prompt: str) -> None:
    page.set_viewport_size({"width": 1280, "height": 800})
    sign_in(page, edge, user)
    page.fill("#prompt", prompt)
    page.click("#ask")


def test_chat_answer_table_and_trace_waterfall(platform, page):
    ask_in_chat(page, platform.edge, "erin@finopti.dev", "find idle instances")
    table = page.wait_for_selector("[data-testid=answer-table]")
    headers = [h.inner_text().lower() for h in table.query_selector_all("th")]
    assert "name" in headers and "zone" in headers, headers
    assert len(table.query_selector_all("tbody tr")) >= 1
    turn = page.locator("[data-testid=turn]").first
    assert "gcloud-agent" in turn.inner_text() and "find_idle_instances" in turn.inner_text()
    shot(page, "chat")

    page.click("text=view trace")
    page.wait_for_url("**/console/trace/**")

    def services() -> set[str]:
        return set(page.eval_on_selector_all(".waterfall .hop[data-service]", "els => els.map(e => e.dataset.service)"))

    # The collector ships lines within a second or two: reload until every hop of the request is stored.
    deadline = time.monotonic() + 15
    hops = {"orchestrator", "gcloud-agent", "gcloud-tools"}
    while not hops <= services() and time.monotonic() < deadline:
        time.sleep(1)
        page.reload()
        page.wait_for_selector("[data-testid=waterfall], [data-testid=trace-error]")
    found = services() - {""}
    assert hops <= found, found
    # Each hop shows the gateway's own authorization decision and the rule that made it.
    decisions = page.eval_on_selector_all(".waterfall .hop[data-authz]", "els => els.map(e => e.innerText)")
    assert len(decisions) >= 3 and all("allow" in d and "authz" in d for d in decisions), decisions
    bars = page.eval_on_selector_all(".waterfall .bar", "els => els.map(e => e.getBoundingClientRect().width)")
    assert bars and all(w > 0 for w in bars)
    assert page.locator(".hop-lines .logs .ln").count() > 0
    shot(page, "trace")


def test_overview_charts_have_data_after_traffic(platform, page):
    for _ in range(3):
        assert platform.ask("find idle instances", "erin@finopti.dev").status_code == 200
    page.set_viewport_size({"width": 1280, "height": 800})
    sign_in(page, platform.edge, "erin@finopti.dev", "/console")
    # Prometheus scrapes every few seconds and the recording rules need two samples for a rate: wait.
    deadline = time.monotonic() + 60
    while True:
        page.wait_for_selector(".panel[data-state=loading]", state="detached")
        states = dict(page.eval_on_selector_all(".panel", "els => els.map(e => [e.dataset.title, e.dataset.state])"))
        with_data = [t for t, s in states.items() if s == "data"]
        if {"Requests per route", "Requests per service"} <= set(with_data) or time.monotonic() > deadline:
            break
        time.sleep(3)
        page.click("text=Refresh")
    assert "error" not in states.values(), states
    assert {"Requests per route", "Requests per service"} <= set(with_data), states
    assert len(with_data) >= 4, states
    lines = page.eval_on_selector_all(".panel[data-state=data] svg path", "els => els.length")
    assert lines > 0
    # Panels without data say why (the model's expected-empty reason).
    for title, state in states.items():
        if state == "empty":
            assert page.locator(f".panel[data-title='{title}'] [data-testid=empty]").inner_text().strip()
    shot(page, "overview")
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    shot(page, "overview-bottom")

    # The model's variables: choosing a service narrows the per-service panels to it.
    page.wait_for_selector("select[data-variable=service] option[value=orchestrator]", state="attached")
    with page.expect_response(lambda r: "service_requests" in unquote_plus(r.url)
                              and 'service=~"orchestrator"' in unquote_plus(r.url)) as filtered:
        page.select_option("select[data-variable=service]", "orchestrator")
    assert filtered.value.ok
    page.wait_for_selector(".panel[data-state=loading]", state="detached")
    page.wait_for_timeout(500)
    names = page.eval_on_selector_all(".panel[data-title='Requests per service'] .legend span",
                                      "els => els.map(e => e.textContent)")
    assert all(n.startswith("orchestrator") for n in names), names


def test_live_console_shows_new_lines_within_two_seconds(platform, page):
    page.set_viewport_size({"width": 1280, "height": 800})
    sign_in(page, platform.edge, "erin@finopti.dev", "/console/live")
    page.wait_for_selector("#stream-status[data-state=on]:has-text('live')")
    answer = platform.ask("list instances in us-central1-a", "erin@finopti.dev")
    assert answer.status_code == 200
    trace_id = answer.json()["trace_id"]
    asked = time.monotonic()
    page.wait_for_selector(f"#live-lines a[href='/console/trace/{trace_id}']", timeout=2000)
    took = time.monotonic() - asked
    assert took < 2.0, took
    # The orchestrator's own line for it is there too.
    page.wait_for_selector(f"#live-lines .ln[data-service=orchestrator] a[href='/console/trace/{trace_id}']",
                           timeout=2000)
    shot(page, "live")

    # Pause: new lines are held back until resumed.
    page.click("#pause")
    before = page.locator("#live-lines .ln").count()
    paused = platform.ask("list buckets", "erin@finopti.dev").json()["trace_id"]
    page.wait_for_selector("#pause:has-text('new')", timeout=5000)
    assert page.locator(f"#live-lines a[href='/console/trace/{paused}']").count() == 0
    assert page.locator("#live-lines .ln").count() == before
    page.click("#pause")
    page.wait_for_selector(f"#live-lines a[href='/console/trace/{paused}']", timeout=2000)

    # Filters: one service (its choices are the services seen), then only error lines.
    page.select_option("#f-service", "orchestrator")
    page.wait_for_selector("#live-lines .ln[data-service=orchestrator]", timeout=5000)
    services = set(page.eval_on_selector_all("#live-lines .ln", "els => els.map(e => e.dataset.service)"))
    assert services == {"orchestrator"}, services
    page.select_option("#f-service", "")
    page.select_option("#f-level", "error")
    page.wait_for_timeout(1500)
    levels = set(page.eval_on_selector_all("#live-lines .ln", "els => els.map(e => e.dataset.level)"))
    assert levels <= {"error", "critical"}, levels


def test_denial_shows_the_policy_reason(platform, page):
    ask_in_chat(page, platform.edge, "carol@finopti.dev", "stop instance indexer-dev-01")
    denied = page.wait_for_selector("[data-testid=denied]")
    expected = platform.ask("stop instance indexer-dev-01", "carol@finopti.dev")
    assert expected.status_code == 403
    assert expected.json()["message"] in denied.inner_text()
    assert page.locator("[data-testid=turn] a.trace-link").count() >= 1
    shot(page, "denied")


def test_console_pages_ask_to_sign_in(platform, page):
    page.set_viewport_size({"width": 1280, "height": 800})
    for path in ("/console", "/console/live", "/console/trace/0123456789abcdef"):
        page.goto(f"{platform.edge}{path}")
        page.evaluate("sessionStorage.clear()")
        page.reload()
        page.wait_for_selector("text=production uses OIDC")
        page.wait_for_selector(".notice.warn:has-text('observability_admin')")
