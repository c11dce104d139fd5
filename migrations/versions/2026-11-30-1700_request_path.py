"""The partner request path in one transaction.

- `reference_versions`: a version per table of reference data (partners, keys, stores, rates,
  rule sets, risk thresholds), moved by a trigger in the transaction that changes the table, so
  that every process can keep these tables in memory and know, from one cheap read, whether its
  copy is current (clearinghouse.reference); the trigger also notes, in a setting local to the
  transaction, that the transaction changed the table. The first versions come from the clock,
  so that a database created again under the same name never matches a copy of the old one.
- `idempotency_records` keep only answers: a request's answer is written in the transaction
  that does its work, so a claim with a lease is no longer needed. Requests with one key wait
  for each other on a transaction-scoped advisory lock instead.
- `partner_request_open` spends a request's nonce, reads the reference versions and takes its
  idempotency key, returning the stored answer when there is one: the first statement of every
  partner request.
- The hot operations in a statement or two each: `accrual_context` locks the member and reads
  everything the earning and risk rules need (`risk_history` gathers the risk rules' inputs);
  `record_purchase` writes the entry, lot, purchase and tier change; `operation_context`,
  `record_hold`, `hold_for_update` and `close_hold` do the same for redemptions (and the first
  for exchanges), `refund_context` and `record_refund` for refunds; `lots_consume`,
  `lots_give_back` and `lots_move` move points between a member's lots; `link_member` links a
  customer, enrolling a member with its accounts when new (`ledger_open_accounts`, which the
  ledger's Python opens accounts with too).
- Partners' issuance headroom and exposure keep their balance in shards like the other partner
  accounts, so that one partner's accruals do not queue on one balance row. A debit of a sharded
  account with a floor (a partner's headroom) takes a shard that can pay it without waiting for
  any; when none can, it locks every shard in order, refuses if all of them together cannot pay,
  and otherwise pays and spreads what is left evenly over them.
- `store_sales_by_hour`: each store's purchase amounts by hour, kept by a trigger on
  `purchases`, in shards (by backend) so that a busy store's accruals do not queue on one row;
  the risk rules' "store's last day" reads at most a day of these and one hour of purchases.
- Indexes for the risk rules' reads of a member's holds, a store's latest amounts, and cases
  by entry and hold.

Revision ID: 0008_request_path
Revises: 0007_console
Create Date: 2026-11-30 17:00:00
"""

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = "0008_request_path"
down_revision: str | None = "0007_console"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The tables of reference data, and the columns whose change matters to a copy of them
# (None: any change). A key's last_used_at is not among them.
REFERENCE_TABLES: dict[str, tuple[str, ...] | None] = {
    "partners": None,
    "partner_keys": ("partner_id", "algorithm", "public_key", "status", "retire_at"),
    "stores": None,
    "partner_rates": None,
    "rule_sets": None,
    "fraud_thresholds": None,
}

# The advisory lock class of idempotency keys (the two-integer lock space).
IDEMPOTENCY_LOCK_CLASS = 1

REFERENCE_VERSIONS = """
CREATE TABLE reference_versions (
    name text CONSTRAINT reference_versions_pkey PRIMARY KEY,
    version bigint NOT NULL
);

-- Moves the table's version, and notes (until the transaction ends) that this transaction
-- changed it: its own reads of the table must not come from, nor go into, a copy that other
-- transactions share.
CREATE FUNCTION reference_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE reference_versions SET version = version + 1 WHERE name = TG_TABLE_NAME;
    PERFORM set_config('reference.changed_' || TG_TABLE_NAME, 'on', true);
    RETURN NULL;
END
$$;
"""

REQUEST_OPEN = f"""
CREATE FUNCTION partner_request_open(
    p_key_id text, p_nonce text, p_partner_id text, p_key text, p_request_hash bytea
) RETURNS TABLE (
    outcome text, versions jsonb, response_status integer, response_headers jsonb,
    response_body bytea
) LANGUAGE plpgsql AS $$
DECLARE
    v_versions jsonb;
    v_record idempotency_records%ROWTYPE;
BEGIN
    INSERT INTO request_nonces (key_id, nonce) VALUES (p_key_id, p_nonce) ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'nonce_replayed', NULL::jsonb, NULL::integer, NULL::jsonb,
                            NULL::bytea;
        RETURN;
    END IF;
    SELECT jsonb_object_agg(name, version) INTO v_versions FROM reference_versions;
    IF p_key IS NOT NULL THEN
        -- A second request with the key waits here until the first commits or rolls back,
        -- then reads its answer (each statement of this function sees what has committed).
        PERFORM pg_advisory_xact_lock({IDEMPOTENCY_LOCK_CLASS},
                                      hashtext(p_partner_id || ' ' || p_key));
        SELECT * INTO v_record FROM idempotency_records r
         WHERE r.partner_id = p_partner_id AND r.key = p_key;
        IF FOUND THEN
            IF v_record.request_hash <> p_request_hash THEN
                RETURN QUERY SELECT 'reused', v_versions, NULL::integer, NULL::jsonb,
                                    NULL::bytea;
            ELSE
                RETURN QUERY SELECT 'replay', v_versions, v_record.response_status,
                                    v_record.response_headers, v_record.response_body;
            END IF;
            RETURN;
        END IF;
    END IF;
    RETURN QUERY SELECT 'new', v_versions, NULL::integer, NULL::jsonb, NULL::bytea;
END
$$;
"""


ENTRY = """
    p_kind text, p_origin text, p_idempotency_key text, p_request_hash bytea,
    p_occurred_at timestamptz, p_metadata jsonb, p_reverses bigint, p_addresses text[],
    p_assets text[], p_amounts bigint[]"""
"""The entry parameters of functions that write one, as ledger_post takes them."""

POST_ENTRY = """ledger_post(p_kind, p_origin, p_idempotency_key, p_request_hash, p_occurred_at,
                    p_metadata, p_reverses, p_addresses, p_assets, p_amounts)"""

RISK = """
    p_risk_operation text, p_risk_member_id text, p_risk_account text, p_risk_store_id text,
    p_risk_at timestamptz, p_risk_burn_minutes integer, p_risk_first_link boolean,
    p_risk_travel boolean"""
"""The parameters of risk_history, for the functions that gather the risk rules' inputs."""

GATHER_RISK = """risk_history(p_risk_operation, p_risk_member_id, p_risk_account,
                              p_risk_store_id, p_risk_at, p_risk_burn_minutes,
                              p_risk_first_link, p_risk_travel)"""

HOT_ACCOUNT_SHARDS = 16

# The hour a purchase's amount is counted in, the same in every session's time zone.
SALES_HOUR = "date_bin('1 hour', {column}, timestamptz '2000-01-01 00:00:00+00')"

HOLD_COLUMNS = """
    id text, partner_id text, member_id text, store_id text, partner_ref text, amount bigint,
    captured bigint, refunded bigint, state text, value_fen bigint, rates_version integer,
    expires_at timestamptz, hold_entry_id bigint, close_entry_id bigint,
    created_at timestamptz, closed_at timestamptz"""

FUNCTIONS = f"""
-- The risk rules' inputs for one attempt (clearinghouse.fraud.rules.History), as a JSON object
-- holding only what the operation's rules read. p_risk_account is the member's available
-- points account.
CREATE FUNCTION risk_history({RISK}) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_history jsonb := '{{}}';
    v_nearest record;
    v_day timestamptz;
    v_hour timestamptz;
BEGIN
    IF p_risk_operation IN ('hold', 'redemption') THEN
        v_history := jsonb_build_object(
            'holds_last_hour',
            (SELECT count(*) FROM holds h
              WHERE h.member_id = p_risk_member_id
                AND h.created_at > p_risk_at - interval '1 hour'),
            'points_held_last_day',
            (SELECT coalesce(sum(h.amount), 0) FROM holds h
              WHERE h.member_id = p_risk_member_id
                AND h.created_at > p_risk_at - interval '1 day'));
        IF p_risk_store_id IS NOT NULL THEN
            v_history := v_history || jsonb_build_object(
                'recent_points_at_store',
                (SELECT max(p.points) FROM purchases p
                  WHERE p.member_id = p_risk_member_id AND p.store_id = p_risk_store_id
                    AND p.occurred_at > p_risk_at - make_interval(mins => p_risk_burn_minutes)));
        END IF;
        IF p_risk_first_link THEN
            v_history := v_history || jsonb_build_object(
                'first_linked_at',
                (SELECT min(l.linked_at) FROM member_links l
                  WHERE l.member_id = p_risk_member_id));
        END IF;
    ELSIF p_risk_operation = 'accrual' AND p_risk_store_id IS NOT NULL THEN
        -- The store's purchases after the last day's start: the hours wholly after it from the
        -- running totals, the hour it falls in from the purchases themselves.
        v_day := p_risk_at - interval '1 day';
        v_hour := {SALES_HOUR.format(column="v_day")};
        v_history := jsonb_build_object(
            'store_last_day_fen',
            (SELECT coalesce(sum(s.amount_fen), 0) FROM store_sales_by_hour s
              WHERE s.store_id = p_risk_store_id AND s.hour > v_hour)
            + (SELECT coalesce(sum(p.amount_fen), 0) FROM purchases p
                WHERE p.store_id = p_risk_store_id
                  AND p.occurred_at > v_day AND p.occurred_at < v_hour + interval '1 hour'),
            'store_recent_amounts',
            (SELECT coalesce(jsonb_agg(r.amount_fen ORDER BY r.id DESC), '[]')
               FROM (SELECT p.id, p.amount_fen FROM purchases p
                      WHERE p.store_id = p_risk_store_id
                      ORDER BY p.id DESC LIMIT 200) r));
    ELSIF p_risk_operation = 'exchange' THEN
        -- Every exchange entry moves the member's available points: found by its postings.
        SELECT jsonb_build_object(
                   'exchanges_in_last_day', count(*) FILTER (WHERE e.kind = 'exchange_in'),
                   'exchanges_out_last_day', count(*) FILTER (WHERE e.kind = 'exchange_out'))
          INTO v_history
          FROM postings p JOIN journal_entries e ON e.id = p.entry_id
         WHERE p.account_id = (SELECT a.id FROM accounts a WHERE a.address = p_risk_account)
           AND p.recorded_at > p_risk_at - interval '1 day'
           AND e.kind IN ('exchange_in', 'exchange_out');
    END IF;
    IF p_risk_travel THEN
        SELECT p.occurred_at, s.id, s.latitude, s.longitude INTO v_nearest
          FROM purchases p JOIN stores s ON s.id = p.store_id
         WHERE p.member_id = p_risk_member_id AND s.latitude IS NOT NULL
           AND s.id <> p_risk_store_id
         ORDER BY abs(extract(epoch FROM p.occurred_at - p_risk_at))
         LIMIT 1;
        IF FOUND THEN
            v_history := v_history || jsonb_build_object('nearest_other', jsonb_build_object(
                'occurred_at', v_nearest.occurred_at, 'store_id', v_nearest.id,
                'latitude', v_nearest.latitude, 'longitude', v_nearest.longitude));
        END IF;
    END IF;
    RETURN v_history;
END
$$;

-- Moves points into (positive) or out of (negative) lots, recording each movement against the
-- entry, in the order given.
CREATE FUNCTION lots_move(p_entry_id bigint, p_lots bigint[], p_amounts bigint[])
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO lot_movements (lot_id, entry_id, amount)
    SELECT m.lot_id, p_entry_id, m.amount
      FROM unnest(p_lots, p_amounts) WITH ORDINALITY AS m(lot_id, amount, n)
     ORDER BY m.n;
    UPDATE point_lots l SET remaining = l.remaining + m.amount
      FROM (SELECT u.lot_id, sum(u.amount) AS amount
              FROM unnest(p_lots, p_amounts) AS u(lot_id, amount)
             GROUP BY u.lot_id) m
     WHERE l.id = m.lot_id;
END
$$;

-- Takes points from the member's open lots: lot p_first before the others if given, then the
-- oldest-expiring. The caller holds the member's lock and has posted the entry.
CREATE FUNCTION lots_consume(
    p_member_id text, p_points bigint, p_entry_id bigint, p_first bigint
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_lots bigint[];
    v_taken bigint[];
    v_total bigint;
BEGIN
    SELECT array_agg(o.id ORDER BY o.n), array_agg(-o.take ORDER BY o.n), sum(o.take)
      INTO v_lots, v_taken, v_total
      FROM (SELECT l.id, row_number() OVER w AS n,
                   least(l.remaining, p_points - (sum(l.remaining) OVER w - l.remaining)) AS take,
                   sum(l.remaining) OVER w - l.remaining AS before
              FROM point_lots l
             WHERE l.member_id = p_member_id AND l.remaining > 0
            WINDOW w AS (ORDER BY l.id <> coalesce(p_first, 0), l.expires_at, l.id)) o
     WHERE o.before < p_points;
    IF coalesce(v_total, 0) <> p_points THEN
        -- The ledger's floor already refused an overdraft: lots disagreeing is a broken
        -- invariant, not a refusal.
        RAISE EXCEPTION 'lots of member % hold % of % points', p_member_id,
            coalesce(v_total, 0), p_points;
    END IF;
    PERFORM lots_move(p_entry_id, v_lots, v_taken);
END
$$;

-- Gives p_points back to lots, in the order given, each at most what it gave (p_taken).
CREATE FUNCTION lots_give_back(
    p_entry_id bigint, p_lots bigint[], p_taken bigint[], p_points bigint
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_lots bigint[];
    v_given bigint[];
    v_total bigint;
BEGIN
    SELECT array_agg(o.lot_id ORDER BY o.n), array_agg(o.give ORDER BY o.n), sum(o.give)
      INTO v_lots, v_given, v_total
      FROM (SELECT t.lot_id, t.n,
                   least(t.taken, p_points - (sum(t.taken) OVER w - t.taken)) AS give,
                   sum(t.taken) OVER w - t.taken AS before
              FROM unnest(p_lots, p_taken) WITH ORDINALITY AS t(lot_id, taken, n)
            WINDOW w AS (ORDER BY t.n)) o
     WHERE o.before < p_points;
    IF coalesce(v_total, 0) <> p_points THEN
        RAISE EXCEPTION 'cannot restore % points to lots that gave %', p_points,
            coalesce(v_total, 0);
    END IF;
    PERFORM lots_move(p_entry_id, v_lots, v_given);
END
$$;

-- Everything an accrual needs to know, read after the member's lock: whether the partner may
-- see the member, an earlier report of the transaction, the member's purchases in the month,
-- the day and the tier windows (one pass), tier, points debt (p_debt_account's balance), a
-- pending referral and the risk rules' inputs.
CREATE FUNCTION accrual_context(
    p_partner_id text, p_member_id text, p_partner_txn_id text,
    p_month_start timestamptz, p_month_end timestamptz,
    p_day_start timestamptz, p_day_end timestamptz,
    p_then_from timestamptz, p_then_to timestamptz,
    p_now_from timestamptz, p_now_to timestamptz, p_debt_account text,
    {RISK}
) RETURNS TABLE (
    linked boolean, birth_month smallint, replay_id bigint, month_spend_fen bigint,
    bought_here boolean, points_today_here bigint, qualifying_then bigint,
    qualifying_now bigint, tier text, debt bigint, referral_pending boolean, risk jsonb
) LANGUAGE plpgsql AS $$
DECLARE
    v_birth_month smallint;
    v_replay bigint;
BEGIN
    PERFORM FROM member_links l WHERE l.partner_id = p_partner_id AND l.member_id = p_member_id;
    IF NOT FOUND THEN
        RETURN QUERY SELECT false, NULL::smallint, NULL::bigint, NULL::bigint, NULL::boolean,
            NULL::bigint, NULL::bigint, NULL::bigint, NULL::text, NULL::bigint, NULL::boolean,
            NULL::jsonb;
        RETURN;
    END IF;
    SELECT m.birth_month INTO v_birth_month FROM members m
     WHERE m.id = p_member_id FOR NO KEY UPDATE;
    SELECT p.id INTO v_replay FROM purchases p
     WHERE p.partner_id = p_partner_id AND p.partner_txn_id = p_partner_txn_id;
    IF v_replay IS NOT NULL THEN
        RETURN QUERY SELECT true, v_birth_month, v_replay, NULL::bigint, NULL::boolean,
            NULL::bigint, NULL::bigint, NULL::bigint, NULL::text, NULL::bigint, NULL::boolean,
            NULL::jsonb;
        RETURN;
    END IF;
    RETURN QUERY
    SELECT true, v_birth_month, NULL::bigint,
           coalesce(sum(p.amount_fen - p.refunded_fen) FILTER (
               WHERE p.occurred_at >= p_month_start AND p.occurred_at < p_month_end), 0)::bigint,
           coalesce(bool_or(p.partner_id = p_partner_id), false),
           coalesce(sum(p.points) FILTER (
               WHERE p.partner_id = p_partner_id
                 AND p.occurred_at >= p_day_start AND p.occurred_at < p_day_end), 0)::bigint,
           coalesce(sum(p.points - p.refunded_points) FILTER (
               WHERE p.occurred_at > p_then_from AND p.occurred_at <= p_then_to), 0)::bigint,
           coalesce(sum(p.points - p.refunded_points) FILTER (
               WHERE p.occurred_at > p_now_from AND p.occurred_at <= p_now_to), 0)::bigint,
           coalesce((SELECT t.to_tier FROM tier_changes t WHERE t.member_id = p_member_id
                      ORDER BY t.changed_at DESC, t.id DESC LIMIT 1), 'normal'),
           (SELECT coalesce(sum(b.balance), 0)::bigint
              FROM accounts a JOIN account_balances b ON b.account_id = a.id
             WHERE a.address = p_debt_account),
           EXISTS (SELECT FROM referrals r
                    WHERE r.invitee_member_id = p_member_id AND r.bonus_entry_id IS NULL),
           {GATHER_RISK}
      FROM purchases p WHERE p.member_id = p_member_id;
END
$$;

-- An accrual's writes: its entry (none without points: p_kind NULL), lot, purchase and tier
-- change.
CREATE FUNCTION record_purchase(
    {ENTRY},
    p_partner_id text, p_partner_txn_id text, p_member_id text, p_store_id text,
    p_amount_fen bigint, p_currency text, p_purchased_at timestamptz, p_points bigint,
    p_rules_version integer,
    p_rates_version integer, p_breakdown jsonb, p_issue_value_fen bigint,
    p_lot_points bigint, p_lot_expires_at timestamptz,
    p_tier_from text, p_tier_to text, p_tier_points bigint, p_tier_rules_version integer
) RETURNS TABLE (new_purchase_id bigint, new_entry_id bigint) LANGUAGE plpgsql AS $$
DECLARE
    v_entry bigint;
    v_purchase bigint;
BEGIN
    IF p_kind IS NOT NULL THEN
        SELECT l.entry_id INTO v_entry FROM {POST_ENTRY} l;
    END IF;
    IF p_lot_points IS NOT NULL THEN
        INSERT INTO point_lots
            (member_id, source, issuer_partner_id, entry_id, earned_at, expires_at, amount,
             remaining)
        VALUES (p_member_id, 'purchase', p_partner_id, v_entry, p_purchased_at,
                p_lot_expires_at, p_lot_points, p_lot_points);
    END IF;
    INSERT INTO purchases
        (partner_id, partner_txn_id, member_id, store_id, amount_fen, currency, occurred_at,
         points, entry_id, rules_version, rates_version, breakdown, issue_value_fen)
    VALUES (p_partner_id, p_partner_txn_id, p_member_id, p_store_id, p_amount_fen, p_currency,
            p_purchased_at, p_points, v_entry, p_rules_version, p_rates_version, p_breakdown,
            p_issue_value_fen)
    RETURNING id INTO v_purchase;
    IF p_tier_to IS NOT NULL THEN
        INSERT INTO tier_changes (member_id, from_tier, to_tier, qualifying_points, rules_version)
        VALUES (p_member_id, p_tier_from, p_tier_to, p_tier_points, p_tier_rules_version);
    END IF;
    RETURN QUERY SELECT v_purchase, v_entry;
END
$$;

-- What a member's operation needs, after the member's lock: whether the partner may see the
-- member, the entry an earlier attempt with the same key wrote (a hold, an exchange), and the
-- risk rules' inputs.
CREATE FUNCTION operation_context(
    p_partner_id text, p_member_id text, p_origin text, p_entry_key text, {RISK}
) RETURNS TABLE (linked boolean, replay_entry_id bigint, risk jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    v_replay bigint;
BEGIN
    PERFORM FROM member_links l WHERE l.partner_id = p_partner_id AND l.member_id = p_member_id;
    IF NOT FOUND THEN
        RETURN QUERY SELECT false, NULL::bigint, NULL::jsonb;
        RETURN;
    END IF;
    PERFORM FROM members m WHERE m.id = p_member_id FOR NO KEY UPDATE;
    SELECT e.id INTO v_replay FROM journal_entries e
     WHERE e.origin = p_origin AND e.idempotency_key = p_entry_key;
    IF v_replay IS NOT NULL THEN
        RETURN QUERY SELECT true, v_replay, NULL::jsonb;
        RETURN;
    END IF;
    RETURN QUERY SELECT true, NULL::bigint, {GATHER_RISK};
END
$$;

-- What refunding a purchase needs, after the member's lock: the purchase (locked), the refund
-- recorded earlier under this refund id, whether the purchase's points wait for a risk review,
-- the member's available points (p_available_account's balance) and the purchase's own lot.
CREATE FUNCTION refund_context(
    p_purchase_id bigint, p_member_id text, p_refund_id text, p_available_account text
) RETURNS TABLE (
    amount_fen bigint, points bigint, entry_id bigint, store_id text, issue_value_fen bigint,
    refunded_fen bigint, refunded_points bigint, refunded_value_fen bigint,
    earlier_amount_fen bigint, earlier_points bigint, earlier_from_available bigint,
    earlier_to_debt bigint, earlier_value_fen bigint, earlier_entry_id bigint,
    under_review boolean, available bigint, own_lot bigint
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM FROM members m WHERE m.id = p_member_id FOR NO KEY UPDATE;
    PERFORM FROM purchases p WHERE p.id = p_purchase_id FOR NO KEY UPDATE;
    RETURN QUERY
    SELECT p.amount_fen, p.points, p.entry_id, p.store_id, p.issue_value_fen, p.refunded_fen,
           p.refunded_points, p.refunded_value_fen,
           r.amount_fen, r.points, r.from_available, r.to_debt, r.value_fen, r.entry_id,
           p.entry_id IS NOT NULL AND EXISTS (
               SELECT FROM fraud_cases c WHERE c.entry_id = p.entry_id
                  AND c.operation = 'accrual' AND c.state = 'open'),
           (SELECT coalesce(sum(b.balance), 0)::bigint
              FROM accounts a JOIN account_balances b ON b.account_id = a.id
             WHERE a.address = p_available_account),
           (SELECT l.id FROM point_lots l WHERE l.entry_id = p.entry_id LIMIT 1)
      FROM purchases p
      LEFT JOIN refunds r ON r.purchase_id = p.id AND r.partner_refund_id = p_refund_id
     WHERE p.id = p_purchase_id;
END
$$;

-- A refund's writes: its entry (none without points: p_kind NULL), the points taken from the
-- member's lots (the purchase's own lot first), the purchase's running totals, the refund.
CREATE FUNCTION record_refund(
    {ENTRY},
    p_purchase_id bigint, p_member_id text, p_refund_id text, p_amount_fen bigint,
    p_points bigint, p_from_available bigint, p_to_debt bigint, p_value_fen bigint,
    p_from_lots bigint, p_own_lot bigint
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_entry bigint;
BEGIN
    IF p_kind IS NOT NULL THEN
        SELECT l.entry_id INTO v_entry FROM {POST_ENTRY} l;
    END IF;
    IF p_from_lots > 0 THEN
        PERFORM lots_consume(p_member_id, p_from_lots, v_entry, p_own_lot);
    END IF;
    UPDATE purchases p
       SET refunded_fen = p.refunded_fen + p_amount_fen,
           refunded_points = p.refunded_points + p_points,
           refunded_value_fen = p.refunded_value_fen + p_value_fen
     WHERE p.id = p_purchase_id;
    INSERT INTO refunds
        (purchase_id, partner_refund_id, amount_fen, points, from_available, to_debt,
         value_fen, entry_id)
    VALUES (p_purchase_id, p_refund_id, p_amount_fen, p_points, p_from_available, p_to_debt,
            p_value_fen, v_entry);
    RETURN v_entry;
END
$$;

-- A hold's writes: its entry, the points taken from the member's lots, the hold.
CREATE FUNCTION record_hold(
    {ENTRY},
    p_hold_id text, p_partner_id text, p_member_id text, p_store_id text, p_partner_ref text,
    p_points bigint, p_value_fen bigint, p_rates_version integer, p_expires_at timestamptz
) RETURNS SETOF holds LANGUAGE plpgsql AS $$
DECLARE
    v_entry bigint;
BEGIN
    SELECT l.entry_id INTO v_entry FROM {POST_ENTRY} l;
    PERFORM lots_consume(p_member_id, p_points, v_entry, NULL);
    RETURN QUERY
    INSERT INTO holds
        (id, partner_id, member_id, store_id, partner_ref, amount, value_fen, rates_version,
         expires_at, hold_entry_id)
    VALUES (p_hold_id, p_partner_id, p_member_id, p_store_id, p_partner_ref, p_points,
            p_value_fen, p_rates_version, p_expires_at, v_entry)
    RETURNING *;
END
$$;

-- The hold (of the partner, unless p_partner_id is NULL), its member locked first and then the
-- hold row (the lock order of every member write), with its open risk case if any.
CREATE FUNCTION hold_for_update(p_partner_id text, p_hold_id text)
RETURNS TABLE ({HOLD_COLUMNS}, open_case_id text) LANGUAGE plpgsql AS $$
DECLARE
    v_member text;
BEGIN
    SELECT h.member_id INTO v_member FROM holds h
     WHERE h.id = p_hold_id AND (p_partner_id IS NULL OR h.partner_id = p_partner_id);
    IF NOT FOUND THEN
        RETURN;
    END IF;
    PERFORM FROM members m WHERE m.id = v_member FOR NO KEY UPDATE;
    PERFORM FROM holds h WHERE h.id = p_hold_id FOR NO KEY UPDATE;
    RETURN QUERY
    SELECT h.id, h.partner_id, h.member_id, h.store_id, h.partner_ref, h.amount, h.captured,
           h.refunded, h.state, h.value_fen, h.rates_version, h.expires_at, h.hold_entry_id,
           h.close_entry_id, h.created_at, h.closed_at,
           (SELECT c.id FROM fraud_cases c WHERE c.hold_id = h.id AND c.state = 'open')
      FROM holds h WHERE h.id = p_hold_id;
END
$$;

-- Closes a hold: its entry, the released points back to the lots they came from (the last
-- taken first), the hold's new state.
CREATE FUNCTION close_hold(
    {ENTRY},
    p_hold_id text, p_hold_entry_id bigint, p_state text, p_captured bigint,
    p_released bigint, p_value_fen bigint
) RETURNS SETOF holds LANGUAGE plpgsql AS $$
DECLARE
    v_entry bigint;
    v_lots bigint[];
    v_taken bigint[];
BEGIN
    SELECT l.entry_id INTO v_entry FROM {POST_ENTRY} l;
    IF p_released > 0 THEN
        SELECT array_agg(m.lot_id ORDER BY m.id DESC), array_agg(-m.amount ORDER BY m.id DESC)
          INTO v_lots, v_taken
          FROM lot_movements m WHERE m.entry_id = p_hold_entry_id;
        PERFORM lots_give_back(v_entry, v_lots, v_taken, p_released);
    END IF;
    RETURN QUERY
    UPDATE holds h
       SET state = p_state, captured = p_captured, value_fen = p_value_fen,
           close_entry_id = v_entry, closed_at = now()
     WHERE h.id = p_hold_id
    RETURNING h.*;
END
$$;

-- Opens the accounts that do not exist yet (clearinghouse.ledger.open_accounts lays them out).
CREATE FUNCTION ledger_open_accounts(
    p_addresses text[], p_assets text[], p_owner_types text[], p_owner_ids text[],
    p_kinds text[], p_non_negative boolean[], p_shards smallint[]
) RETURNS void LANGUAGE sql AS $$
    INSERT INTO accounts (address, asset, owner_type, owner_id, kind, non_negative, shards)
    SELECT * FROM unnest(p_addresses, p_assets, p_owner_types, p_owner_ids, p_kinds,
                         p_non_negative, p_shards)
    ON CONFLICT (address) DO NOTHING;
$$;

-- Links a partner's customer to a member: the member given, or a new one (p_new_member_id,
-- with the accounts described by the p_account_* arrays, as ledger_open_accounts takes them).
-- One at a time per customer. Outcomes: 'linked' (new), 'existing', 'linked_elsewhere' (the
-- customer is linked to another member), 'unknown_member', 'member_taken' (the member is
-- linked to another of the partner's customers).
CREATE FUNCTION link_member(
    p_partner_id text, p_customer_ref text, p_member_id text, p_birth_month smallint,
    p_new_member_id text, p_account_addresses text[], p_account_assets text[],
    p_account_owner_types text[], p_account_owner_ids text[], p_account_kinds text[],
    p_account_non_negative boolean[], p_account_shards smallint[]
) RETURNS TABLE (outcome text, member_id text, customer_ref text, linked_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_link member_links%ROWTYPE;
    v_member text := p_member_id;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(concat_ws(':', p_partner_id, p_customer_ref)));
    SELECT * INTO v_link FROM member_links l
     WHERE l.partner_id = p_partner_id AND l.customer_ref = p_customer_ref;
    IF FOUND THEN
        RETURN QUERY SELECT
            CASE WHEN p_member_id IS NOT NULL AND p_member_id <> v_link.member_id
                 THEN 'linked_elsewhere' ELSE 'existing' END,
            v_link.member_id, v_link.customer_ref, v_link.linked_at;
        RETURN;
    END IF;
    IF v_member IS NULL THEN
        v_member := p_new_member_id;
        INSERT INTO members (id, birth_month) VALUES (v_member, p_birth_month);
        PERFORM ledger_open_accounts(p_account_addresses, p_account_assets,
            p_account_owner_types, p_account_owner_ids, p_account_kinds,
            p_account_non_negative, p_account_shards);
    ELSIF NOT EXISTS (SELECT FROM members m WHERE m.id = v_member) THEN
        RETURN QUERY SELECT 'unknown_member', v_member, p_customer_ref, NULL::timestamptz;
        RETURN;
    END IF;
    INSERT INTO member_links AS l (partner_id, customer_ref, member_id)
    VALUES (p_partner_id, p_customer_ref, v_member)
    ON CONFLICT DO NOTHING
    RETURNING l.* INTO v_link;
    IF v_link.partner_id IS NULL THEN
        RETURN QUERY SELECT 'member_taken', v_member, p_customer_ref, NULL::timestamptz;
        RETURN;
    END IF;
    IF p_birth_month IS NOT NULL THEN
        UPDATE members m SET birth_month = p_birth_month
         WHERE m.id = v_member AND m.birth_month IS NULL;
    END IF;
    RETURN QUERY SELECT 'linked', v_link.member_id, v_link.customer_ref, v_link.linked_at;
END
$$;

CREATE TABLE store_sales_by_hour (
    store_id text NOT NULL CONSTRAINT store_sales_by_hour_store_id_fkey REFERENCES stores (id),
    hour timestamptz NOT NULL,
    shard smallint NOT NULL,
    amount_fen bigint NOT NULL,
    CONSTRAINT store_sales_by_hour_pkey PRIMARY KEY (store_id, hour, shard)
);
INSERT INTO store_sales_by_hour (store_id, hour, shard, amount_fen)
SELECT p.store_id, {SALES_HOUR.format(column="p.occurred_at")}, 0, sum(p.amount_fen)
  FROM purchases p WHERE p.store_id IS NOT NULL
 GROUP BY 1, 2;

CREATE FUNCTION store_sales_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.store_id IS NOT NULL THEN
        INSERT INTO store_sales_by_hour AS s (store_id, hour, shard, amount_fen)
        VALUES (NEW.store_id, {SALES_HOUR.format(column="NEW.occurred_at")},
                pg_backend_pid() % {HOT_ACCOUNT_SHARDS}, NEW.amount_fen)
        ON CONFLICT (store_id, hour, shard)
        DO UPDATE SET amount_fen = s.amount_fen + EXCLUDED.amount_fen;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER purchases_store_sales AFTER INSERT ON purchases
    FOR EACH ROW EXECUTE FUNCTION store_sales_add();

CREATE INDEX ix_holds_member_id_created_at ON holds (member_id, created_at);
CREATE INDEX ix_fraud_cases_entry_id ON fraud_cases (entry_id) WHERE entry_id IS NOT NULL;
CREATE INDEX ix_fraud_cases_hold_id ON fraud_cases (hold_id) WHERE hold_id IS NOT NULL;
DROP INDEX ix_holds_member_id;
DROP INDEX ix_purchases_store_id_id;
CREATE INDEX ix_purchases_store_id_id ON purchases (store_id, id) INCLUDE (amount_fen);
"""

DROP_FUNCTIONS = """
DROP FUNCTION link_member(text, text, text, smallint, text, text[], text[], text[], text[],
                          text[], boolean[], smallint[]);
DROP FUNCTION ledger_open_accounts(text[], text[], text[], text[], text[], boolean[],
                                   smallint[]);
DROP FUNCTION close_hold(text, text, text, bytea, timestamptz, jsonb, bigint, text[], text[],
                         bigint[], text, bigint, text, bigint, bigint, bigint);
DROP FUNCTION hold_for_update(text, text);
DROP FUNCTION record_hold(text, text, text, bytea, timestamptz, jsonb, bigint, text[], text[],
                          bigint[], text, text, text, text, text, bigint, bigint, integer,
                          timestamptz);
DROP FUNCTION record_refund(text, text, text, bytea, timestamptz, jsonb, bigint, text[], text[],
                            bigint[], bigint, text, text, bigint, bigint, bigint, bigint, bigint,
                            bigint, bigint);
DROP FUNCTION refund_context(bigint, text, text, text);
DROP FUNCTION operation_context(text, text, text, text, text, text, text, text, timestamptz,
                                integer, boolean, boolean);
DROP FUNCTION record_purchase(text, text, text, bytea, timestamptz, jsonb, bigint, text[],
                              text[], bigint[], text, text, text, text, bigint, text,
                              timestamptz, bigint, integer, integer, jsonb, bigint, bigint,
                              timestamptz, text, text, bigint, integer);
DROP FUNCTION accrual_context(text, text, text, timestamptz, timestamptz, timestamptz,
                              timestamptz, timestamptz, timestamptz, timestamptz, timestamptz,
                              text, text, text, text, text, timestamptz, integer, boolean,
                              boolean);
DROP FUNCTION lots_give_back(bigint, bigint[], bigint[], bigint);
DROP FUNCTION lots_consume(text, bigint, bigint, bigint);
DROP FUNCTION lots_move(bigint, bigint[], bigint[]);
DROP FUNCTION risk_history(text, text, text, text, timestamptz, integer, boolean, boolean);
DROP INDEX ix_fraud_cases_hold_id;
DROP INDEX ix_fraud_cases_entry_id;
DROP INDEX ix_holds_member_id_created_at;
CREATE INDEX ix_holds_member_id ON holds (member_id);
DROP INDEX ix_purchases_store_id_id;
CREATE INDEX ix_purchases_store_id_id ON purchases (store_id, id);
DROP TRIGGER purchases_store_sales ON purchases;
DROP FUNCTION store_sales_add();
DROP TABLE store_sales_by_hour;
"""


APPLY_POSTING = """
CREATE OR REPLACE FUNCTION ledger_apply_posting() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_shards smallint;
    v_floor boolean;
    v_shard smallint;
    v_address text;
    v_left bigint;
BEGIN
    SELECT a.shards, a.non_negative INTO v_shards, v_floor FROM accounts a
     WHERE a.id = NEW.account_id;
    IF v_shards = 1 THEN
        UPDATE account_balances SET balance = balance + NEW.amount
         WHERE account_id = NEW.account_id AND shard = 0
           AND (NOT non_negative OR balance + NEW.amount >= 0);
        IF NOT FOUND THEN
            SELECT address INTO v_address FROM accounts WHERE id = NEW.account_id;
            RAISE EXCEPTION 'insufficient balance in %', v_address
                USING ERRCODE = 'LD001', DETAIL = v_address;
        END IF;
    ELSIF NOT v_floor OR NEW.amount > 0 THEN
        -- The first shard no other transaction holds, from one chosen by this backend.
        SELECT shard INTO v_shard FROM account_balances
         WHERE account_id = NEW.account_id
         ORDER BY (shard + pg_backend_pid()) % v_shards
         LIMIT 1 FOR UPDATE SKIP LOCKED;
        IF v_shard IS NULL THEN
            v_shard := pg_backend_pid() % v_shards;
        END IF;
        UPDATE account_balances SET balance = balance + NEW.amount
         WHERE account_id = NEW.account_id AND shard = v_shard;
    ELSE
        -- A debit against a floor: a shard that can pay it, found without waiting for any...
        SELECT shard INTO v_shard FROM account_balances
         WHERE account_id = NEW.account_id AND balance + NEW.amount >= 0
         ORDER BY (shard + pg_backend_pid()) % v_shards
         LIMIT 1 FOR UPDATE SKIP LOCKED;
        IF v_shard IS NOT NULL THEN
            UPDATE account_balances SET balance = balance + NEW.amount
             WHERE account_id = NEW.account_id AND shard = v_shard;
        ELSE
            -- ...else all of them, locked in order: paid if together they can, and what is
            -- left spread evenly again.
            PERFORM FROM account_balances WHERE account_id = NEW.account_id
             ORDER BY shard FOR UPDATE;
            SELECT sum(balance) + NEW.amount INTO v_left FROM account_balances
             WHERE account_id = NEW.account_id;
            IF v_left < 0 THEN
                SELECT address INTO v_address FROM accounts WHERE id = NEW.account_id;
                RAISE EXCEPTION 'insufficient balance in %', v_address
                    USING ERRCODE = 'LD001', DETAIL = v_address;
            END IF;
            UPDATE account_balances
               SET balance = v_left / v_shards + CASE WHEN shard < v_left % v_shards THEN 1
                                                       ELSE 0 END
             WHERE account_id = NEW.account_id;
        END IF;
    END IF;
    RETURN NULL;
END
$$;
"""

# The function as the ledger migration wrote it, for the way back.
APPLY_POSTING_BEFORE = """
CREATE OR REPLACE FUNCTION ledger_apply_posting() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_shards smallint;
    v_shard smallint;
    v_address text;
BEGIN
    SELECT shards INTO v_shards FROM accounts WHERE id = NEW.account_id;
    IF v_shards = 1 THEN
        UPDATE account_balances SET balance = balance + NEW.amount
         WHERE account_id = NEW.account_id AND shard = 0
           AND (NOT non_negative OR balance + NEW.amount >= 0);
        IF NOT FOUND THEN
            SELECT address INTO v_address FROM accounts WHERE id = NEW.account_id;
            RAISE EXCEPTION 'insufficient balance in %', v_address
                USING ERRCODE = 'LD001', DETAIL = v_address;
        END IF;
    ELSE
        SELECT shard INTO v_shard FROM account_balances
         WHERE account_id = NEW.account_id
         ORDER BY (shard + pg_backend_pid()) % v_shards
         LIMIT 1 FOR UPDATE SKIP LOCKED;
        IF v_shard IS NULL THEN
            v_shard := pg_backend_pid() % v_shards;
        END IF;
        UPDATE account_balances SET balance = balance + NEW.amount
         WHERE account_id = NEW.account_id AND shard = v_shard;
    END IF;
    RETURN NULL;
END
$$;
"""

SHARD_PARTNER_LIMITS = f"""
ALTER TABLE accounts DROP CONSTRAINT accounts_guarded_unsharded_check;
UPDATE accounts SET shards = {HOT_ACCOUNT_SHARDS}
 WHERE owner_type = 'partner' AND kind IN ('headroom', 'exposure') AND shards = 1;
INSERT INTO account_balances (account_id, shard, non_negative)
SELECT a.id, s, a.non_negative
  FROM accounts a, generate_series(1, {HOT_ACCOUNT_SHARDS} - 1) AS s
 WHERE a.owner_type = 'partner' AND a.kind IN ('headroom', 'exposure')
ON CONFLICT DO NOTHING;
"""

UNSHARD_PARTNER_LIMITS = """
UPDATE account_balances b SET balance = t.total
  FROM (SELECT account_id, sum(balance) AS total FROM account_balances GROUP BY account_id) t,
       accounts a
 WHERE b.account_id = t.account_id AND a.id = b.account_id AND b.shard = 0
   AND a.owner_type = 'partner' AND a.kind IN ('headroom', 'exposure');
DELETE FROM account_balances b USING accounts a
 WHERE a.id = b.account_id AND b.shard > 0
   AND a.owner_type = 'partner' AND a.kind IN ('headroom', 'exposure');
UPDATE accounts SET shards = 1 WHERE owner_type = 'partner' AND kind IN ('headroom', 'exposure');
ALTER TABLE accounts ADD CONSTRAINT accounts_guarded_unsharded_check
    CHECK (NOT non_negative OR shards = 1);
"""


def _reference_triggers() -> str:
    statements = []
    for table, columns in REFERENCE_TABLES.items():
        update = "UPDATE" if columns is None else f"UPDATE OF {', '.join(columns)}"
        statements.append(
            f"CREATE TRIGGER {table}_reference_touch "
            f"AFTER INSERT OR {update} OR DELETE OR TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION reference_touch();"
        )
    return "\n".join(statements)


def upgrade() -> None:
    op.execute(REFERENCE_VERSIONS)
    op.execute(
        text(
            "INSERT INTO reference_versions (name, version) "
            "SELECT name, (extract(epoch FROM clock_timestamp()) * 1000)::bigint "
            "FROM unnest(CAST(:names AS text[])) AS name"
        ).bindparams(names=list(REFERENCE_TABLES))
    )
    op.execute(_reference_triggers())
    op.execute(
        """
        DELETE FROM idempotency_records WHERE state = 'in_progress';
        ALTER TABLE idempotency_records
            DROP CONSTRAINT idempotency_records_response_when_done_check,
            DROP CONSTRAINT idempotency_records_state_known_check,
            DROP COLUMN state,
            DROP COLUMN lease_until,
            DROP COLUMN completed_at,
            ALTER COLUMN response_status SET NOT NULL,
            ALTER COLUMN response_headers SET NOT NULL,
            ALTER COLUMN response_body SET NOT NULL;
        """
    )
    op.execute(REQUEST_OPEN)
    op.execute(FUNCTIONS)
    op.execute(APPLY_POSTING)
    op.execute(SHARD_PARTNER_LIMITS)


def downgrade() -> None:
    op.execute(UNSHARD_PARTNER_LIMITS)
    op.execute(APPLY_POSTING_BEFORE)
    op.execute(DROP_FUNCTIONS)
    op.execute("DROP FUNCTION partner_request_open(text, text, text, text, bytea)")
    op.execute(
        """
        ALTER TABLE idempotency_records
            ADD COLUMN state text NOT NULL DEFAULT 'done',
            ADD COLUMN lease_until timestamptz NOT NULL DEFAULT now(),
            ADD COLUMN completed_at timestamptz,
            ALTER COLUMN response_status DROP NOT NULL,
            ALTER COLUMN response_headers DROP NOT NULL,
            ALTER COLUMN response_body DROP NOT NULL,
            ADD CONSTRAINT idempotency_records_state_known_check
                CHECK (state IN ('in_progress', 'done')),
            ADD CONSTRAINT idempotency_records_response_when_done_check
                CHECK ((state = 'done') = (response_status IS NOT NULL));
        ALTER TABLE idempotency_records ALTER COLUMN state DROP DEFAULT,
            ALTER COLUMN lease_until DROP DEFAULT;
        """
    )
    for table in REFERENCE_TABLES:
        op.execute(f"DROP TRIGGER {table}_reference_touch ON {table}")
    op.execute("DROP FUNCTION reference_touch(); DROP TABLE reference_versions;")
