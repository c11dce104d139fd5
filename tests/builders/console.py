"""A browser-like client for the console: its own cookie jar, forms posted with the CSRF token
of the page they came from, redirects not followed; and the console in another language. The
people who sign in are users.person."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from fastapi import FastAPI

from clearinghouse.config import get_settings
from clearinghouse.console import i18n, render
from tests.builders.http import own_client
from tests.builders.users import Person


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
        response: httpx.Response = self.http.post(
            "/console/sign-in",
            data={
                "login": who.id,
                "password": who.password if password is None else password,
                "signin_token": hidden(form.text, "signin_token"),
                "next": next,
            },
        )
        return response

    def get(self, path: str) -> httpx.Response:
        response: httpx.Response = self.http.get(path)
        if response.status_code == 200 and "text/html" in response.headers["content-type"]:
            self.last_page = response.text
        return response

    def post(self, path: str, **fields: str) -> httpx.Response:
        """A form on the last page read, with that page's CSRF token unless one is given."""
        data = {"csrf_token": hidden(self.last_page, "csrf_token"), **fields}
        response: httpx.Response = self.http.post(path, data=data)
        return response

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
