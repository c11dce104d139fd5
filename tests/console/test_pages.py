"""The console through HTTP as a browser uses it: sign-in, cookies, CSRF, roles, and the
settlement's whole path from computed to paid, with its downloads."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from datetime import date, timedelta

import httpx
import pytest
from pypdf import PdfReader

from clearinghouse.console.formatting import yuan
from clearinghouse.fraud import service as fraud
from clearinghouse.numbers import yuan_text
from settlement import runs, schedule
from tests.builders.console import Console
from tests.builders.databases import World
from tests.builders.dates import business_today
from tests.builders.fraud import publish
from tests.builders.partners import legal_name
from tests.builders.points import accrue, new_member
from tests.builders.settlement import (
    Traffic,
    a_day_of_traffic,
    computed_early,
    settle_after_cutoff,
)
from tests.builders.users import Person, person

Browser = Callable[..., Console]


def settled_day(world: World) -> tuple[Traffic, date]:
    traffic = a_day_of_traffic(world)
    day = business_today()
    settle_after_cutoff(world.sessions, day)
    return traffic, day


def signed_in(browser: Browser, who: Person) -> Console:
    console = browser()
    response = console.sign_in(who)
    assert response.status_code == 303, response.text
    return console


def session_cookie(response: httpx.Response) -> str:
    return next(h for h in response.headers.get_list("set-cookie") if h.startswith("ch_session="))


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def approvals_of(world: World, day: date) -> int:
    with world.sessions() as session:
        return len(runs.approvals(session, day))


# --- signing in and out ---------------------------------------------------------------------


def test_pages_send_strangers_to_the_sign_in_page(world: World, browser: Browser) -> None:
    console = browser()
    response = console.get("/console/settlements/2026-11-24")
    assert response.status_code == 303
    assert response.headers["location"] == "/console/sign-in?next=/console/settlements/2026-11-24"


def test_signing_in_sets_a_guarded_cookie_and_goes_where_asked(
    world: World, browser: Browser
) -> None:
    finance = person(world.sessions, "finance")
    console = browser()
    response = console.sign_in(finance, next="/console/liability")
    assert response.status_code == 303
    assert response.headers["location"] == "/console/liability"
    cookie = session_cookie(response)
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Path=/console" in cookie
    assert "Secure" not in cookie  # plain HTTP: a Secure cookie would never come back
    assert console.get("/console/liability").status_code == 200


def test_behind_tls_the_cookie_is_secure(world: World, browser: Browser) -> None:
    finance = person(world.sessions, "finance")
    response = browser("https://testserver").sign_in(finance)
    cookie = session_cookie(response)
    assert "Secure" in cookie


def test_sign_in_never_redirects_off_the_console(world: World, browser: Browser) -> None:
    finance = person(world.sessions, "finance")
    for target in ("https://evil.example/", "//evil.example/x", "/v1/anything"):
        response = browser().sign_in(finance, next=target)
        assert response.headers["location"] == "/console/"


def test_a_wrong_password_shows_the_form_again_and_five_lock_the_name(
    world: World, browser: Browser
) -> None:
    finance = person(world.sessions, "finance")
    console = browser()
    for _ in range(5):
        wrong = console.sign_in(finance, password="not the password")
        assert wrong.status_code == 401
        assert "The name or the password is wrong." in wrong.text
        assert "ch_session" not in wrong.headers.get("set-cookie", "")
    locked = console.sign_in(finance)
    assert locked.status_code == 429
    assert "locked" in locked.text


def test_a_sign_in_form_without_its_token_is_refused(world: World, browser: Browser) -> None:
    """Login CSRF: another site cannot sign a victim in to the attacker's account."""
    finance = person(world.sessions, "finance")
    console = browser()
    response = console.http.post(
        "/console/sign-in",
        data={"login": finance.id, "password": finance.password, "signin_token": "forged"},
    )
    assert response.status_code == 403
    assert "ch_session" not in response.headers.get("set-cookie", "")


def test_sign_out_ends_the_session_on_the_server(world: World, browser: Browser) -> None:
    finance = person(world.sessions, "finance")
    console = signed_in(browser, finance)
    console.get("/console/settlements")
    cookie = console.http.cookies["ch_session"]
    out = console.post("/console/sign-out")
    assert out.status_code == 303
    assert out.headers["location"] == "/console/sign-in"
    replay = browser()
    replay.http.cookies.set("ch_session", cookie, domain="testserver.local", path="/console")
    assert replay.get("/console/settlements").status_code == 303


def test_pages_carry_security_headers(world: World, browser: Browser) -> None:
    console = signed_in(browser, person(world.sessions, "finance"))
    response = console.get("/console/settlements")
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-frame-options"] == "DENY"
    assert "default-src 'none'" in response.headers["content-security-policy"]


# --- roles ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "path", "status"),
    [
        ("finance", "/console/cases", 403),
        ("approver", "/console/cases", 403),
        ("auditor", "/console/cases", 403),
        ("operator", "/console/cases", 200),
        ("operator", "/console/settlements", 403),
        ("operator", "/console/liability", 403),
        ("operator", "/console/reconciliations", 403),
        ("auditor", "/console/settlements", 200),
        ("auditor", "/console/liability", 200),
        ("approver", "/console/reconciliations", 200),
    ],
)
def test_each_page_admits_its_roles_only(
    world: World, browser: Browser, role: str, path: str, status: int
) -> None:
    console = signed_in(browser, person(world.sessions, role))
    response = console.get(path)
    assert response.status_code == status
    if status == 403:
        assert "Not allowed for this role" in response.text


def test_home_leads_each_role_to_its_work(world: World, browser: Browser) -> None:
    assert (
        signed_in(browser, person(world.sessions, "operator")).get("/console/").headers["location"]
        == "/console/cases"
    )
    assert (
        signed_in(browser, person(world.sessions, "finance")).get("/console/").headers["location"]
        == "/console/settlements"
    )


def test_an_auditor_reads_a_settlement_but_cannot_approve_it(
    world: World, browser: Browser
) -> None:
    _, day = settled_day(world)
    auditor = signed_in(browser, person(world.sessions, "auditor"))
    page = auditor.get(f"/console/settlements/{day}")
    assert page.status_code == 200
    assert "/approve" not in page.text
    refused = auditor.post(f"/console/settlements/{day}/approve")
    assert refused.status_code == 403
    assert approvals_of(world, day) == 0


# --- the settlement, from computed to paid ----------------------------------------------------


def test_two_people_approve_then_one_marks_it_paid(world: World, browser: Browser) -> None:
    traffic, day = settled_day(world)
    alice = signed_in(browser, person(world.sessions, "finance"))
    bob = signed_in(browser, person(world.sessions, "approver"))

    listing = alice.get("/console/settlements")
    assert f'href="/console/settlements/{day}"' in listing.text
    assert "computed" in listing.text

    page = alice.get(f"/console/settlements/{day}")
    text = text_of(page.text)
    assert yuan(traffic.issued_fen) in text
    assert yuan(traffic.redeemed_fen) in text
    assert "Zero-sum check passed" in text
    assert "0 / 2" in text
    assert "<svg" in page.text

    first = alice.follow(alice.post(f"/console/settlements/{day}/approve"))
    assert "Your approval is recorded." in first.text
    assert "1 / 2" in text_of(first.text)
    assert "/approve" not in first.text  # Alice may not approve twice

    bob.get(f"/console/settlements/{day}")
    second = bob.follow(bob.post(f"/console/settlements/{day}/approve"))
    assert "state-approved" in second.text
    assert "2 / 2" in text_of(second.text)

    paid = bob.follow(bob.post(f"/console/settlements/{day}/paid", bank_reference="ICBC-42"))
    assert "state-paid" in paid.text
    assert "ICBC-42" in paid.text
    with world.sessions() as session:
        run = runs.load_run(session, day)
    assert (run.state, run.bank_reference) == ("paid", "ICBC-42")


def test_the_same_person_cannot_approve_twice(world: World, browser: Browser) -> None:
    _, day = settled_day(world)
    alice = signed_in(browser, person(world.sessions, "finance"))
    alice.get(f"/console/settlements/{day}")
    alice.post(f"/console/settlements/{day}/approve")
    again = alice.post(f"/console/settlements/{day}/approve")
    assert again.status_code == 409
    assert "another person must approve" in again.text
    assert f'href="/console/settlements/{day}"' in again.text
    assert approvals_of(world, day) == 1


def test_a_form_without_the_session_token_changes_nothing(world: World, browser: Browser) -> None:
    _, day = settled_day(world)
    alice = signed_in(browser, person(world.sessions, "finance"))
    alice.get(f"/console/settlements/{day}")
    for token in ("", "forged"):
        refused = alice.post(f"/console/settlements/{day}/approve", csrf_token=token)
        assert refused.status_code == 403
        assert "The form has expired" in refused.text
    assert approvals_of(world, day) == 0


def test_rejecting_needs_a_reason_and_records_it(world: World, browser: Browser) -> None:
    _, day = settled_day(world)
    alice = signed_in(browser, person(world.sessions, "finance"))
    alice.get(f"/console/settlements/{day}")
    assert alice.post(f"/console/settlements/{day}/reject", reason="").status_code == 422
    rejected = alice.post(f"/console/settlements/{day}/reject", reason="rates were wrong")
    assert rejected.status_code == 303
    with world.sessions() as session:
        steps = runs.history(session, day)
    assert steps[-1].to_state == "rejected"
    assert steps[-1].note == "rates were wrong"


def test_the_csv_and_pdf_downloads(world: World, browser: Browser) -> None:
    traffic, day = settled_day(world)
    alice = signed_in(browser, person(world.sessions, "finance"))

    csv_response = alice.get(f"/console/settlements/{day}/report.csv")
    assert csv_response.status_code == 200
    assert csv_response.headers["content-type"].startswith("text/csv")
    assert f'filename="settlement-{day}.csv"' in csv_response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(csv_response.text)))
    payer = next(row for row in rows if row["partner_id"] == traffic.payer.id)
    assert payer["legal_name"] == legal_name(traffic.payer.id)
    assert int(payer["net_fen"]) == traffic.issued_fen
    assert payer["net_yuan"] == yuan_text(traffic.issued_fen)

    pdf_response = alice.get(f"/console/settlements/{day}/report.pdf")
    assert pdf_response.status_code == 200
    assert pdf_response.headers["content-type"] == "application/pdf"
    text = "".join(
        page.extract_text() for page in PdfReader(io.BytesIO(pdf_response.content)).pages
    )
    assert legal_name(traffic.payer.id) in " ".join(text.split())
    assert yuan(traffic.issued_fen) in text


def test_an_unsettled_date_is_a_readable_not_found_page(world: World, browser: Browser) -> None:
    alice = signed_in(browser, person(world.sessions, "finance"))
    missing = alice.get("/console/settlements/2001-01-01")
    assert missing.status_code == 404
    assert "has not been settled" in missing.text
    assert 'href="/console/"' in missing.text
    assert alice.get("/console/settlements/not-a-date").status_code == 404


def test_an_unknown_console_path_is_a_page_too(world: World, browser: Browser) -> None:
    assert browser().get("/console/nowhere").status_code == 303
    alice = signed_in(browser, person(world.sessions, "finance"))
    missing = alice.get("/console/nowhere/at/all")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("text/html")
    assert "there is no page /console/nowhere/at/all" in missing.text
    assert alice.get("/console/static/console.css").status_code == 200


def test_the_list_marks_yesterday(world: World, browser: Browser) -> None:
    yesterday = business_today() - timedelta(days=1)
    schedule.settle(world.sessions, yesterday)
    listing = signed_in(browser, person(world.sessions, "finance")).get("/console/settlements")
    row = next(r for r in listing.text.split("<tr>") if yesterday.isoformat() in r)
    assert "yesterday" in row


# --- reports that explain themselves ------------------------------------------------------------


def test_a_partners_line_drills_down_to_its_entries_with_its_advice(
    world: World, browser: Browser
) -> None:
    traffic, day = settled_day(world)
    auditor = signed_in(browser, person(world.sessions, "auditor"))
    payer = traffic.payer.id
    drill_down = f"/console/settlements/{day}/partners/{payer}"

    page = auditor.get(f"/console/settlements/{day}")
    assert f'<a href="{drill_down}">{legal_name(payer)}</a>' in page.text
    assert f'href="{drill_down}/advice.pdf"' in page.text
    assert f'href="/console/settlements/months/{day:%Y-%m}"' in page.text

    lines = auditor.get(drill_down)
    assert lines.status_code == 200, lines.text
    text = text_of(lines.text)
    assert legal_name(payer) in text
    entries = lines.text.split('<table class="entries">', 1)[1].split("</table>", 1)[0]
    [row] = re.findall(r"<tr>\s*<td.*?</tr>", entries, flags=re.DOTALL)
    cells = [text_of(cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.DOTALL)]
    # entry, kind, category, transaction, points, value, rates version, issue price, redemption
    assert cells[1:3] == ["accrual", "Issued"]
    assert cells[5:9] == [yuan(traffic.issued_fen), "1", "1.2", "1"]

    csv_response = auditor.get(f"{drill_down}/entries.csv")
    assert csv_response.status_code == 200
    assert f'filename="settlement-{day}-{payer}.csv"' in csv_response.headers["content-disposition"]
    [entry] = list(csv.DictReader(io.StringIO(csv_response.text)))
    assert (entry["kind"], entry["value_fen"]) == ("accrual", str(traffic.issued_fen))
    assert entry["value_yuan"] == yuan_text(traffic.issued_fen)

    advice = auditor.get(f"{drill_down}/advice.pdf")
    assert advice.status_code == 200
    assert advice.headers["content-type"] == "application/pdf"
    advice_text = " ".join(
        " ".join(page.extract_text().split())
        for page in PdfReader(io.BytesIO(advice.content)).pages
    )
    assert legal_name(payer) in advice_text
    assert f"You pay the clearing house {yuan(traffic.issued_fen)} by" in advice_text

    stranger = world.merchant().id
    assert auditor.get(f"/console/settlements/{day}/partners/{stranger}").status_code == 404
    assert (
        auditor.get(f"/console/settlements/{day}/partners/{stranger}/advice.pdf").status_code == 404
    )


def test_the_month_view_shows_each_partners_net(world: World, browser: Browser) -> None:
    traffic, day = settled_day(world)
    alice = signed_in(browser, person(world.sessions, "finance"))
    listing = alice.get("/console/settlements")
    month = f"{business_today() - timedelta(days=1):%Y-%m}"
    assert f'href="/console/settlements/months/{month}"' in listing.text

    page = alice.get(f"/console/settlements/months/{day:%Y-%m}")
    assert page.status_code == 200, page.text
    partners = page.text.split('<table class="month-partners">', 1)[1].split("</table>", 1)[0]
    rows = {
        text_of(name).strip(): text_of(rest)
        for name, rest in re.findall(
            r'<th scope="row">(.*?)</th>(.*?)</tr>', partners.split("<tfoot>")[0], re.DOTALL
        )
    }
    assert yuan(traffic.issued_fen) in rows[legal_name(traffic.payer.id)]
    assert yuan(traffic.redeemed_fen) in rows[legal_name(traffic.receiver.id)]
    assert f'href="/console/settlements/{day}"' in page.text
    assert alice.get("/console/settlements/months/2026-13").status_code == 404


def test_what_a_partner_pays_is_not_shown_as_an_alarm(world: World, browser: Browser) -> None:
    """Paying is the normal course of a partner that issues points: not red, the colour of a
    failed check."""
    css = signed_in(browser, person(world.sessions, "finance")).get("/console/static/console.css")
    rules = dict(re.findall(r"^([^{}\n]+?)\s*\{([^}]*)\}", css.text, flags=re.MULTILINE))
    assert "var(--bad)" in rules["td.failure"]
    assert "var(--bad)" not in rules["td.pays"]


# --- liability, reconciliation, fraud ---------------------------------------------------------


def test_the_liability_page_shows_outstanding_points_and_a_chart(
    world: World, browser: Browser
) -> None:
    traffic, _ = settled_day(world)
    alice = signed_in(browser, person(world.sessions, "finance"))
    page = alice.get("/console/liability?days=7")
    assert page.status_code == 200
    # The issuers by their legal names, in the table and the chart's legend.
    assert f'<th scope="row">{legal_name(traffic.payer.id)}</th>' in page.text
    assert page.text.count(legal_name(traffic.payer.id)) >= 2
    assert traffic.payer.id not in text_of(page.text)
    assert "<svg" in page.text
    assert "Expiring soon" in page.text
    for line in ("In open holds", "Pending a risk review", "Owed by members", "Issued", "Redeemed"):
        assert f'<th scope="row">{line}</th>' in page.text
    assert "a purchase reported late counts from the day it arrived" in page.text


def test_reconciliation_breaks_are_listed_and_resolved(world: World, browser: Browser) -> None:
    traffic, day = settled_day(world)
    upload = world.client(traffic.payer).post(
        "/v1/reconciliations",
        {
            "business_date": day.isoformat(),
            "csv": "txn_id,type,amount_fen,points\nghost,purchase,100,1\nghost,purchase,100,1\n",
        },
    )
    alice = signed_in(browser, person(world.sessions, "finance"))
    listing = alice.get(f"/console/reconciliations?date={day}")
    assert f'href="/console/reconciliations/{upload["id"]}"' in listing.text
    assert f"<td>{legal_name(traffic.payer.id)}</td>" in listing.text
    assert "open breaks" in listing.text
    settlement_page = text_of(alice.get(f"/console/settlements/{day}").text)
    assert "Open breaks" in settlement_page

    detail = alice.get(f"/console/reconciliations/{upload['id']}")
    assert f"<dd>{legal_name(traffic.payer.id)} ({traffic.payer.id})</dd>" in detail.text
    assert "ghost" in detail.text
    assert "not in our records" in detail.text
    assert "repeated in the partner" in detail.text  # the second ghost line: a duplicate
    resolved = alice.follow(alice.post(f"/console/reconciliations/{upload['id']}/resolve"))
    assert "The breaks are marked resolved." in resolved.text


def test_the_approver_is_warned_of_open_breaks_before_and_after_approving(
    world: World, browser: Browser
) -> None:
    traffic, day = settled_day(world)
    world.client(traffic.payer).post(
        "/v1/reconciliations",
        {
            "business_date": day.isoformat(),
            "csv": "txn_id,type,amount_fen,points\nghost,purchase,100,1\n",
        },
    )
    with world.sessions() as session:
        breaks = runs.open_breaks(session, day)
    assert breaks == 2  # the ghost, and the purchase the file leaves out
    warning = f"{breaks} reconciliation breaks are open for this date"
    alice = signed_in(browser, person(world.sessions, "finance"))
    before = alice.get(f"/console/settlements/{day}").text
    assert 'id="warnings"' in before
    assert warning in text_of(before)

    after = alice.follow(alice.post(f"/console/settlements/{day}/approve"))
    assert "Your approval is recorded, despite the warnings below." in after.text
    assert warning in text_of(after.text)
    assert approvals_of(world, day) == 1


def test_a_run_computed_early_is_flagged_on_its_page(world: World, browser: Browser) -> None:
    a_day_of_traffic(world)
    day = business_today()
    computed_early(world.sessions, day)
    alice = signed_in(browser, person(world.sessions, "finance"))
    page = alice.get(f"/console/settlements/{day}").text
    assert 'id="computed-early"' in page
    assert "computed early, at " in text_of(page)

    on_time = day - timedelta(days=1)
    schedule.settle(world.sessions, on_time)
    assert 'id="computed-early"' not in alice.get(f"/console/settlements/{on_time}").text

    # The list says so beside the early run's state, and only there.
    listing = alice.get("/console/settlements").text.split("<tr>")

    def row_of(date_: date) -> str:
        return next(row for row in listing if f'href="/console/settlements/{date_}"' in row)

    assert "early: before its cut-off" in row_of(day)
    assert "early: before its cut-off" not in row_of(on_time)


def test_an_operator_works_the_fraud_queue(world: World, browser: Browser) -> None:
    partner = world.merchant()
    publish(world.sessions, partner.id, max_accrual_fen_online=10_000, amount_cap_action="review")
    member_id = new_member(world.sessions, [partner.id])
    accrued = accrue(world.sessions, partner.id, member_id, 52_000)
    case_id = accrued.review_case_id
    assert case_id is not None

    operator = signed_in(browser, person(world.sessions, "operator"))
    queue = operator.get("/console/cases")
    assert f'href="/console/cases/{case_id}"' in queue.text
    operator.get(f"/console/cases/{case_id}")
    done = operator.follow(
        operator.post(f"/console/cases/{case_id}/approve", note="known customer")
    )
    assert "The case is approved" in done.text
    assert "known customer" in done.text
    with world.sessions() as session:
        assert fraud.get_case(session, case_id).state == "approved"
