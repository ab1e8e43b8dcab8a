"""The evaluator's and the admin's pages in a real headless Chromium (Debian's, driven by
Playwright): sign in, read the guidelines, answer a pairwise and a ranking task, and find the
judgements in the database; a prompt and a response full of HTML and `<script>` are shown as
text and run nothing. Screenshots of the task pages and the admin dashboard are saved."""

from __future__ import annotations


import pytest
from sqlalchemy import select

from live_server import serving

from alignloop.feedback import service
from alignloop.feedback.database import make_engine, make_session_factory, transaction
from alignloop.feedback.models import Candidate, Item, Judgement

pytestmark = pytest.mark.browser

XSS_PROMPT = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'
XSS_RESPONSE = '<b>bold?</b><img src=x onerror="window.__xss=3">'
PASSWORD = "pw-123-long"


@pytest.fixture
def site(sqlite_url):
    """(base URL, session factory, campaign id): one item whose prompt and first response are hostile HTML."""
    engine = make_engine(sqlite_url)
    store = make_session_factory(engine)
    with serving(sqlite_url) as base:
        with transaction(store) as session:
            service.create_user(session, "admin", PASSWORD, "admin")
            service.create_user(session, "eve", PASSWORD)
            campaign = service.create_campaign(
                session, "browser check", ["pairwise", "ranking"], overlap=2,
                guidelines="Prefer the answer that is correct.\nIgnore length.",
            )
            session.add(Item(campaign_id=campaign.id, prompt=XSS_PROMPT, candidates=[
                Candidate(text=XSS_RESPONSE, meta={}), Candidate(text="Plain answer two.", meta={}),
                Candidate(text="Plain answer three.", meta={}),
            ]))
        yield base, store, campaign.id
    engine.dispose()


def sign_in(page, base: str, username: str) -> None:
    page.goto(f"{base}/signin")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")


def assert_nothing_ran(page, dialogs: list[str]) -> None:
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert dialogs == []
    assert page.locator("main script").count() == 0 and page.locator("main img").count() == 0


def test_evaluator_signs_in_reads_guidelines_and_answers_pairwise_and_ranking(site, page, browser, screenshot_dir):
    base, store, campaign_id = site
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

    sign_in(page, base, "eve")
    assert page.url == f"{base}/home"
    page.click("text=Read guidelines")
    assert "Ignore length." in page.inner_text(".guidelines")
    page.click("#acknowledge")

    # Pairwise: the hostile prompt and response are on screen as text, and nothing ran.
    page.wait_for_selector("text=Which response is better?")
    assert page.inner_text("#prompt-text") == XSS_PROMPT
    assert_nothing_ran(page, dialogs)
    page.screenshot(path=str(screenshot_dir / "evaluator-pairwise.png"), full_page=True)
    shown_pair = [int(value) for value in page.eval_on_selector_all(".candidate", "nodes => nodes.map(n => n.dataset.candidate)")]
    page.check('input[name=choice][value="a"]')
    page.check('input[name=strength][value="2"]')
    page.fill("textarea[name=comment]", "A is <i>clearer</i>")
    page.click("#submit-answer")

    # Ranking: all three responses, ranks chosen from selects; 2 and 3 tie.
    page.wait_for_selector("text=Give each response a rank")
    shown_ranking = [int(value) for value in page.eval_on_selector_all(".candidate", "nodes => nodes.map(n => n.dataset.candidate)")]
    with transaction(store) as session:
        all_candidates = set(session.scalars(select(Candidate.id)))
    assert len(shown_ranking) == 3 and set(shown_ranking) == all_candidates and set(shown_pair) < all_candidates
    assert XSS_RESPONSE in page.inner_text("main")  # pairwise showed 2 of 3; the ranking shows every response
    chosen = dict(zip(shown_ranking, ("1", "2", "2")))
    for candidate, rank in chosen.items():
        page.select_option(f"select[name=rank_{candidate}]", rank)
    assert_nothing_ran(page, dialogs)
    page.screenshot(path=str(screenshot_dir / "evaluator-ranking.png"), full_page=True)
    page.click("#submit-answer")
    page.wait_for_selector("text=Nothing left for you")
    assert_nothing_ran(page, dialogs)

    with transaction(store) as session:
        judgements = {j.task_type.value: j for j in session.scalars(select(Judgement).order_by(Judgement.id))}
    assert set(judgements) == {"pairwise", "ranking"}
    pairwise, ranking = judgements["pairwise"], judgements["ranking"]
    assert pairwise.shown_order == shown_pair
    assert pairwise.answer == {"choice": "a", "better": shown_pair[0], "strength": 2}
    assert pairwise.comment == "A is <i>clearer</i>" and pairwise.via == "web" and pairwise.duration_ms >= 0
    assert ranking.shown_order == shown_ranking
    assert ranking.answer == {"ranks": {str(candidate): int(rank) for candidate, rank in chosen.items()}}

    # The admin dashboard shows the campaign's progress and quality numbers.
    admin_context = browser.new_context()
    admin = admin_context.new_page()
    try:
        sign_in(admin, base, "admin")
        assert admin.url == f"{base}/admin"
        admin.click("text=browser check")
        admin.wait_for_selector("#progress")
        progress = admin.inner_text("#progress")
        assert "pairwise\t1\t2" in progress and "ranking\t1\t2" in progress  # 1 item x overlap 2
        assert "eve" in admin.inner_text("#evaluators") or "quality module not available" in admin.content()
        assert "unknown" in admin.inner_text("#evaluators")  # eve shared no pair with anyone: no reliability verdict
        admin.screenshot(path=str(screenshot_dir / "admin-dashboard.png"), full_page=True)
        admin.goto(f"{base}/admin/campaigns/new")
        admin.screenshot(path=str(screenshot_dir / "admin-new-campaign.png"), full_page=True)
    finally:
        admin_context.close()
    for name in ("evaluator-pairwise.png", "evaluator-ranking.png", "admin-dashboard.png"):
        assert (screenshot_dir / name).stat().st_size > 10_000


def test_the_api_docs_render_from_local_assets_without_breaking_the_policy(site, page):
    base = site[0]
    refused = []  # requests the page made that failed, and CSP violations the console reports
    page.on("requestfailed", lambda request: refused.append(request.url))
    page.on("console", lambda message: "Content Security Policy" in message.text and refused.append(message.text))
    page.goto(f"{base}/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=20_000)
    assert "alignloop feedback" in page.inner_text(".swagger-ui .info .title")
    page.wait_for_selector(".opblock")
    assert page.locator(".opblock").count() >= 9  # one block per operation of the API
    assert "/api/v1/campaigns/{campaign_id}/next" in page.inner_text(".swagger-ui")
    assert refused == []
