"""Who is calling a finance, audit or operator route: the person behind the bearer token, found
by the gate before the body was read (partners.gate), with the role the route needs."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from clearinghouse.users.service import NotSignedIn, User, require_role


def _bearer(request: Request) -> User:
    """The person behind the bearer token, found by the gate before the body was read
    (partners.gate)."""
    user = getattr(request.state, "staff_user", None)
    if not isinstance(user, User):
        raise NotSignedIn("send Authorization: Bearer <API token>")
    return user


def _finance_user(request: Request) -> User:
    """The person behind the bearer token; finance and approver roles only."""
    user = _bearer(request)
    require_role(user, "finance", "approver")
    return user


FinanceUser = Annotated[User, Depends(_finance_user)]


def _finance_reader(request: Request) -> User:
    """The person behind the bearer token; finance, approver and auditor roles: the finance
    reports' readers (an auditor reads them, never changes them)."""
    user = _bearer(request)
    require_role(user, "finance", "approver", "auditor")
    return user


FinanceReader = Annotated[User, Depends(_finance_reader)]


def _auditor(request: Request) -> User:
    """The auditor behind the bearer token."""
    user = _bearer(request)
    require_role(user, "auditor")
    return user


Auditor = Annotated[User, Depends(_auditor)]


def _operator(request: Request) -> User:
    user = _bearer(request)
    require_role(user, "operator")
    return user


Operator = Annotated[User, Depends(_operator)]
