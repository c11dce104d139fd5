"""Who is looking: the session cookie, the roles each page needs, CSRF on every form, and the
sign-in and sign-out routes. Console routes answer errors with pages, not problem+json."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Coroutine, Sequence
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute

from clearinghouse.api.throttle import RateLimited, Throttle, source_of
from clearinghouse.console import render
from clearinghouse.console.i18n import N_
from clearinghouse.console.i18n import gettext as _
from clearinghouse.database import Tx
from clearinghouse.errors import DomainError
from clearinghouse.users import signin
from clearinghouse.users.service import require_role

PREFIX = "/console"
SESSION_COOKIE = "ch_session"
SIGNIN_COOKIE = "ch_signin"

FINANCE_VIEWERS = ("finance", "approver", "auditor")
FINANCE_ACTORS = ("finance", "approver")
OPERATORS = ("operator",)


class SignInRequired(Exception):
    """No live session: the browser is sent to the sign-in page."""


class CsrfFailed(DomainError):
    code = "csrf_failed"
    status = 403
    title = "The form has expired"


def _back(request: Request) -> str:
    """Where a person goes back to after an error: the page a form was posted from, or the
    console's home when a page itself failed."""
    if request.method == "POST":
        return request.url.path.rsplit("/", 1)[0]
    return PREFIX + "/"


# What a value that failed validation should have been, by the start of pydantic's error type.
EXPECTED = (
    ("date", N_("a date written YYYY-MM-DD, such as 2026-11-30")),
    ("int", N_("a whole number")),
    ("greater_than", N_("a larger number")),
    ("less_than", N_("a smaller number")),
    ("string_too_short", N_("filled in")),
    ("string_too_long", N_("shorter")),
    ("missing", N_("given")),
)


def _refused(request: Request, errors: Sequence[Any]) -> tuple[int, str]:
    """A page's address that names nothing is not found (404); a bad query is a bad request
    (400); a form is sent back to be checked (422)."""
    if request.method != "GET":
        return 422, _("Check the form")
    if any(error["loc"][0] == "path" for error in errors):
        return 404, _("Not found")
    return 400, _("Check the address")


def _in_words(error: Any) -> str:
    """One refused value in words a person reads, never pydantic's own message."""
    field = str(error["loc"][-1]).replace("_", " ")
    expected = next(
        (_(words) for prefix, words in EXPECTED if error["type"].startswith(prefix)),
        _("one of the values the page offers"),
    )
    if "input" in error and isinstance(error["input"], str | int):
        return _("The %(field)s “%(value)s” is not valid: it must be %(expected)s.") % {
            "field": field,
            "value": error["input"],
            "expected": expected,
        }
    return _("The %(field)s must be %(expected)s.") % {"field": field, "expected": expected}


class ConsoleRoute(APIRoute):
    """Errors become pages a person can read, with a way back; no session means the sign-in
    page. The request's unit of work has rolled back by the time the error reaches here."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired:
                # After signing in, back to the page asked for (or the form's page).
                target = request.url.path if request.method == "GET" else _back(request)
                return RedirectResponse(f"{PREFIX}/sign-in?next={quote(target)}", status_code=303)
            except DomainError as exc:
                return render.page(
                    request,
                    "error.html",
                    exc.status,
                    title=exc.title,
                    detail=exc.detail,
                    back=_back(request),
                )
            except RequestValidationError as exc:
                status, title = _refused(request, exc.errors())
                return render.page(
                    request,
                    "error.html",
                    status,
                    title=title,
                    detail=" ".join(_in_words(error) for error in exc.errors()),
                    back=_back(request),
                )

        return guarded


def console_router() -> APIRouter:
    return APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)


router = console_router()


def _signed_in(request: Request) -> signin.ConsoleSession:
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise SignInRequired
    with request.app.state.sessions() as session, session.begin():
        found = signin.session_for(session, cookie)
    if found is None:
        raise SignInRequired
    request.state.console = found
    return found


def _viewing(*roles: str) -> Callable[[Request], signin.ConsoleSession]:
    def dependency(request: Request) -> signin.ConsoleSession:
        found = _signed_in(request)
        require_role(found.user, *roles)
        return found

    return dependency


def _acting(*roles: str) -> Callable[..., signin.ConsoleSession]:
    """A form post by a person of one of the roles, carrying the session's CSRF token."""

    def dependency(
        request: Request, csrf_token: Annotated[str, Form()] = ""
    ) -> signin.ConsoleSession:
        found = _signed_in(request)
        if not hmac.compare_digest(csrf_token.encode(), found.csrf_token.encode()):
            raise CsrfFailed(_("reload the page and try again"))
        require_role(found.user, *roles)
        return found

    return dependency


Signed = Annotated[signin.ConsoleSession, Depends(_viewing(*FINANCE_VIEWERS, *OPERATORS))]
FinanceViewer = Annotated[signin.ConsoleSession, Depends(_viewing(*FINANCE_VIEWERS))]
FinanceActor = Annotated[signin.ConsoleSession, Depends(_acting(*FINANCE_ACTORS))]
OperatorViewer = Annotated[signin.ConsoleSession, Depends(_viewing(*OPERATORS))]
OperatorActor = Annotated[signin.ConsoleSession, Depends(_acting(*OPERATORS))]
AnyActor = Annotated[signin.ConsoleSession, Depends(_acting(*FINANCE_VIEWERS, *OPERATORS))]


def _secure(request: Request) -> bool:
    """Cookies are Secure whenever the console is reached over TLS (directly, or behind a proxy
    that uvicorn trusts to say so)."""
    return request.url.scheme == "https"


def _safe_next(target: str | None) -> str:
    """Only a path inside the console: never another site."""
    if target and target.startswith(PREFIX + "/") and not target.startswith("//"):
        return target
    return PREFIX + "/"


def home_for(role: str) -> str:
    return f"{PREFIX}/cases" if role in OPERATORS else f"{PREFIX}/settlements"


def _sign_in_page(
    request: Request, next_path: str, status_code: int = 200, error: str | None = None
) -> Response:
    token = secrets.token_urlsafe(32)
    response = render.page(
        request,
        "sign_in.html",
        status_code,
        signin_token=token,
        next_path=_safe_next(next_path),
        error=error,
    )
    response.set_cookie(
        SIGNIN_COOKIE,
        token,
        max_age=3600,
        path=f"{PREFIX}/sign-in",
        secure=_secure(request),
        httponly=True,
        samesite="strict",
    )
    return response


@router.get("/sign-in")
def sign_in_form(request: Request, next: str = "") -> Response:
    return _sign_in_page(request, next)


@router.post("/sign-in")
def sign_in(
    request: Request,
    login: Annotated[str, Form(max_length=40)],
    password: Annotated[str, Form(max_length=signin.MAX_PASSWORD_LENGTH)],
    signin_token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "",
) -> Response:
    expected = request.cookies.get(SIGNIN_COOKIE, "")
    if not expected or not hmac.compare_digest(signin_token.encode(), expected.encode()):
        return _sign_in_page(request, next, 403, _("The form has expired: please sign in again."))
    remote = request.client.host if request.client else None
    throttle: Throttle = request.app.state.throttle
    source = source_of(request.scope)
    failure: tuple[int, str] | None = None
    with request.app.state.sessions() as session, session.begin():
        # The attempt is recorded whether or not it succeeds, so the error is caught inside.
        try:
            throttle.refuse_blocked(source)
            throttle.check_source(Tx.of(session), source)
            try:
                user = signin.sign_in(session, login, password, remote)
            except signin.SignInFailed:
                throttle.failed(Tx.of(session), source)
                raise
            cookie, _opened = signin.start_session(session, user)
        except RateLimited:
            failure = (429, _("Too many failed sign-ins from your address: try again later."))
        except signin.LockedOut:
            failure = (429, _("Too many failed sign-ins: this name is locked for a while."))
        except signin.SignInFailed:
            failure = (401, _("The name or the password is wrong."))
    if failure is not None:
        return _sign_in_page(request, next, *failure)
    target = _safe_next(next) if next else home_for(user.role)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=int(signin.SESSION_LIFETIME.total_seconds()),
        path=PREFIX,
        secure=_secure(request),
        httponly=True,
        samesite="lax",
    )
    response.delete_cookie(SIGNIN_COOKIE, path=f"{PREFIX}/sign-in")
    return response


@router.post("/sign-out")
def sign_out(request: Request, me: AnyActor) -> Response:
    with request.app.state.sessions() as session, session.begin():
        signin.end_session(session, request.cookies[SESSION_COOKIE])
    response = RedirectResponse(f"{PREFIX}/sign-in", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=PREFIX)
    return response


@router.get("/")
def home(me: Signed) -> Response:
    return RedirectResponse(home_for(me.user.role), status_code=303)
