"""The settlement papers the console draws, for people and for scripts: a partner's settlement
advice as a PDF, on the console's page and under the finance API (`/finance/...`, a bearer token
of the finance, approver or auditor role), so that both serve the same bytes."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Path, Response
from sqlalchemy.orm import Session

from clearinghouse import clock
from clearinghouse.api.deps import ReportSession
from clearinghouse.api.schemas import Day
from clearinghouse.config import get_settings
from clearinghouse.console import pdf
from clearinghouse.users.deps import FinanceReader
from partners.directory import ID_PATTERN
from settlement import reports, runs

finance = APIRouter(prefix="/finance", tags=["finance"])

PartnerId = Annotated[str, Path(pattern=ID_PATTERN, description="The partner's id.")]


def advice_pdf(session: Session, business_date: date, partner_id: str) -> bytes:
    """The partner's settlement advice of the date's live run."""
    run = runs.load_run(session, business_date)
    return pdf.advice_pdf(
        reports.advice(session, run, partner_id),
        generated_at=clock.now().astimezone(get_settings().zone),
    )


@finance.get(
    "/settlements/{business_date}/partners/{partner_id}/advice.pdf",
    summary="A partner's settlement advice (PDF): its line, bank details and due date",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}}},
)
def settlement_advice(
    business_date: Annotated[Day, Path(description="Business date, in the coalition's time zone.")],
    partner_id: PartnerId,
    session: ReportSession,
    user: FinanceReader,
) -> Response:
    return Response(
        advice_pdf(session, business_date, partner_id),
        media_type="application/pdf",
        headers={
            "Content-Disposition": (
                f'attachment; filename="settlement-advice-{business_date}-{partner_id}.pdf"'
            )
        },
    )
