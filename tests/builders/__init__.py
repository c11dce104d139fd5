"""The tests' one set of builders: typed helpers that make test data and the reads the checks
need, one module per kind of thing. Every builder names what it makes afresh (ids.unique_id), so
tests that share a database never touch each other's partners, members, stores or accounts.

- ids: fresh slugs and idempotency keys.
- dates: the coalition's time zone, business dates and instants around month ends.
- ledger: raw ledger accounts and entries posted straight to the journal (no points rules),
  and balance reads.
- partners: partners and programmes with keys, stores, rates and issuance limits.
- users: clearing-house staff with bearer tokens, and people who sign in with a password.
- http: test clients, partner clients, hand-signed requests and the checks refusals share.
- calls: the partner's signed API calls (enrol, buy, hold, redeem, refund, ...).
- points: the points lifecycle through the domain services (new_member, accrue, ...) and the
  wallet reads.
- fraud: places on the map, thresholds, the operators' review queue and the fraud reads.
- settlement: a day of traffic and the reads of what settlement wrote.
- databases: throwaway migrated databases of a test's own (World, Isolated, Books).
- audit: sealing and tampering helpers for the audit tests.
- console: a browser-like client of the console and the console's language.
- webhooks: a local HTTP receiver of webhooks, endpoints, and the reads of deliveries.

The package-level conftests keep their fixtures and build them with these modules."""
