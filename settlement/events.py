"""What settlement tells partners by webhook: each partner in a run hears that it was computed,
approved and paid, with its own line (`announce`, in the transaction of the change). The body is
`SettlementWebhook`, which the OpenAPI document publishes in its webhooks section."""

from __future__ import annotations

from dataclasses import asdict

from sqlalchemy.orm import Session

from clearinghouse.webhooks import service as webhooks
from settlement.runs import Run
from settlement.schemas import LineOut, SettlementWebhookData


def announce(session: Session, run: Run, event_type: str) -> None:
    """Tell each partner in the run, by webhook in the caller's transaction, what became of it:
    the business date, the run's state and attempt, the bank reference once paid, and the
    partner's own line (what it pays the coalition in fen, or receives, and by category)."""
    for line in run.lines:
        net = line.net_fen
        data = SettlementWebhookData(
            business_date=run.business_date,
            state=run.state,
            attempt=run.attempt,
            bank_reference=run.bank_reference,
            pays_fen=max(net, 0),
            receives_fen=max(-net, 0),
            line=LineOut.model_validate({**asdict(line), "net_fen": net}),
        )
        webhooks.emit(session, line.partner_id, event_type, data.model_dump(mode="json"))
