"""People with passwords, and a browser-like client for the console: its own cookie jar,
forms posted with the CSRF token of the page they came from, redirects not followed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from clearinghouse.config import get_settings
from clearinghouse.console import i18n, render
from clearinghouse.users import signin
from clearinghouse.users.service import create_user
from tests.api.builders import unique_id
from tests.builders import own_client

PASSWORD = "correct horse battery staple"


@dataclass(frozen=True)
class Person:
    id: str
    role: str
    password: str = PASSWORD


def person(sessions: sessionmaker[Session], role: str) -> Person:
    """A committed user of the role who signs in with `PASSWORD`."""
    with sessions() as session, session.begin():
        user, _ = create_user(session, unique_id(role[:3]), role)
        signin.set_password(session, user.id, PASSWORD)
    return Person(user.id, role)


def hidden(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found is not None, f"no hidden field {name}"
    return found.group(1)


class Console:
    """One browser: sign in, read pages, post forms."""

    def __init__(self, app: FastAPI, base_url: str = "http://testserver") -> None:
        self.http = own_client(app, base_url=base_url, follow_redirects=False)
        self.last_page = ""

    def close(self) -> None:
        self.http.close()

    def sign_in(self, who: Person, password: str | None = None, next: str = "") -> httpx.Response:
        form = self.http.get("/console/sign-in")
        assert form.status_code == 200
        return self.http.post(
            "/console/sign-in",
            data={
                "login": who.id,
                "password": who.password if password is None else password,
                "signin_token": hidden(form.text, "signin_token"),
                "next": next,
            },
        )

    def get(self, path: str) -> httpx.Response:
        response = self.http.get(path)
        if response.status_code == 200 and "text/html" in response.headers["content-type"]:
            self.last_page = response.text
        return response

    def post(self, path: str, **fields: str) -> httpx.Response:
        """A form on the last page read, with that page's CSRF token unless one is given."""
        data = {"csrf_token": hidden(self.last_page, "csrf_token"), **fields}
        return self.http.post(path, data=data)

    def follow(self, response: httpx.Response) -> httpx.Response:
        assert response.status_code == 303, response.text
        return self.get(response.headers["location"])


@contextmanager
def console_language(language: str) -> Iterator[None]:
    """The console as with CLEARINGHOUSE_LANGUAGE=`language`, then as it was. Settings,
    catalogues and the template environment are cached per process, and an xdist worker runs
    other tests in the same process, so the caches are dropped on the way in and again once the
    variable is restored."""

    def forget() -> None:
        get_settings.cache_clear()
        i18n.translations.cache_clear()
        render.environment.cache_clear()

    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("CLEARINGHOUSE_LANGUAGE", language)
            forget()
            yield
    finally:
        forget()
