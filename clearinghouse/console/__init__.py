"""The finance console: server-rendered pages where people sign in to review, approve and
download settlement reports, look at liability and reconciliation, and work the fraud queue."""
