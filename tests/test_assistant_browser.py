"""Confirm and Cancel in the chat, in a real headless Chromium through the gateway's edge listener."""

import test_ui_browser as ui

from finopti.cloud import SandboxCloud

# The chat page's browser fixtures and helpers (Debian's Chromium; skipped with a reason without it).
browser, page, ask_in_chat, shot = ui.browser, ui.page, ui.ask_in_chat, ui.shot

TARGET = "notebook-dev-01"


def _state(platform) -> str:
    return SandboxCloud(platform.state.sandbox_db).describe_instance(TARGET)["state"]


def test_a_change_waits_for_confirm_then_shows_the_result(platform, page):
    # erin may change instances and read traces (gcloud_admin and observability_admin).
    ask_in_chat(page, platform.edge, "erin@finopti.dev", f"turn off {TARGET}")
    card = page.wait_for_selector("[data-testid=plan]")
    assert "RUNNING → TERMINATED" in card.inner_text() and "Can be undone" in card.inner_text()
    assert _state(platform) == "RUNNING"  # shown, not done
    shot(page, "plan")
    page.click("[data-testid=confirm]")
    page.wait_for_selector("[data-testid=plan-outcome] [data-testid=answer]:has-text('stopped')")
    assert _state(platform) == "TERMINATED"
    assert page.is_disabled("[data-testid=confirm]") and page.is_disabled("[data-testid=cancel]")
    shot(page, "plan-confirmed")
    # The executed change's trace shows the audit record among the agent's log lines.
    page.click("[data-testid=plan-outcome] a.trace-link")
    page.wait_for_selector(f"text=audit: erin@finopti.dev stop_instance {TARGET} succeeded", timeout=30_000)
    shot(page, "plan-audit-trace")
    ask_in_chat(page, platform.edge, "erin@finopti.dev", f"start {TARGET}")
    page.click("[data-testid=confirm]")
    page.wait_for_selector("[data-testid=plan-outcome] [data-testid=answer]:has-text('started')")
    assert _state(platform) == "RUNNING"


def test_cancel_changes_nothing(platform, page):
    ask_in_chat(page, platform.edge, "alice@finopti.dev", f"delete the vm {TARGET}")
    card = page.wait_for_selector("[data-testid=plan]")
    assert "no" in card.inner_text() and page.locator("[data-testid=confirm].danger").count() == 1
    page.click("[data-testid=cancel]")
    page.wait_for_selector("[data-testid=plan-outcome]:has-text('Cancelled: nothing was changed.')")
    assert _state(platform) == "RUNNING"


def test_a_viewer_sees_the_plan_and_the_policys_refusal(platform, page):
    ask_in_chat(page, platform.edge, "bob@finopti.dev", f"stop {TARGET}")
    page.wait_for_selector("[data-testid=plan]")
    page.click("[data-testid=confirm]")
    denied = page.wait_for_selector("[data-testid=plan-outcome] [data-testid=denied]")
    assert "bob@finopti.dev needs role gcloud_admin to run stop_instance" in denied.inner_text()
    assert _state(platform) == "RUNNING"
    shot(page, "plan-denied")


def test_a_question_offers_choices_that_answer_when_clicked(platform, page):
    ask_in_chat(page, platform.edge, "bob@finopti.dev", "describe ledger db")
    page.wait_for_selector("[data-testid=question]")
    page.click("[data-testid=options] button:has-text('ledger-db-staging-01')")
    page.wait_for_selector("[data-testid=answer]:has-text('ledger-db-staging-01 is RUNNING')")
