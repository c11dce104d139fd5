"""A small client for partners' backends: it signs every request as the clearing house expects
(RFC 9421 with Ed25519, RFC 9530 Content-Digest) and gives each POST an Idempotency-Key (a
PUT too: the signature of a body covers one, though setting a value again needs none).

    from partners.client import PartnerClient
    client = PartnerClient.from_key_file("https://clearing.example", "teahouse-1a2b3c4d",
                                         "teahouse.pem")
    link = client.post("/v1/members", {"customer_ref": "cust-42"})
    member = client.get(f"/v1/members/{link['member_id']}")

A retry must reuse the Idempotency-Key of the first attempt: pass `idempotency_key=` yourself
when you may retry, and store it with your own record of the operation.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from partners.signing import HttpRequest, load_private_key_pem, sign_request


def covered(request: httpx.Request) -> HttpRequest:
    """What a signature covers of a request built by httpx (built with its content, so that
    the body is at hand)."""
    target = request.url
    return HttpRequest(
        method=request.method,
        authority=request.headers["host"],
        path=target.raw_path.split(b"?", 1)[0].decode("ascii"),
        query=target.query.decode("ascii"),
        headers=dict(request.headers),
        body=request.content,
        scheme=target.scheme,
    )


class ProblemError(Exception):
    """The clearing house refused the request; `problem` is its RFC 9457 body."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(f"{status} {problem.get('code')}: {problem.get('detail')}")
        self.status = status
        self.problem = problem

    @property
    def code(self) -> str | None:
        code = self.problem.get("code")
        return code if isinstance(code, str) else None


class PartnerClient:
    def __init__(
        self,
        base_url: str,
        key_id: str,
        private_key: Ed25519PrivateKey,
        *,
        http: httpx.Client | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.key_id = key_id
        self._private_key = private_key
        self._http = http or httpx.Client(base_url=base_url, timeout=timeout)

    @classmethod
    def from_key_file(
        cls, base_url: str, key_id: str, key_file: str | Path, **kwargs: Any
    ) -> PartnerClient:
        return cls(base_url, key_id, load_private_key_pem(Path(key_file).read_bytes()), **kwargs)

    def close(self) -> None:
        self._http.close()

    def build(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        file: bytes | None = None,
        media_type: str = "text/csv",
    ) -> httpx.Request:
        """The signed request, ready to send (or to inspect): with `body` as JSON, or with
        `file` of `media_type` as the body itself (`POST /v1/reconciliation-files/{date}`, a CSV
        file; `POST /v1/batches`, JSON Lines)."""
        headers: dict[str, str] = {"Accept": "application/json"}
        content = b""
        if body is not None:
            content = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        elif file is not None:
            content = file
            headers["Content-Type"] = media_type
        if method.upper() in ("POST", "PUT"):
            headers["Idempotency-Key"] = idempotency_key or str(uuid.uuid4())
        request = self._http.build_request(
            method, path, params=params, content=content, headers=headers
        )
        request.headers.update(
            sign_request(covered(request), private_key=self._private_key, keyid=self.key_id)
        )
        return request

    def send(self, request: httpx.Request) -> Any:
        response = self._http.send(request)
        if response.is_error:
            try:
                problem = response.json()
            except ValueError:
                problem = {"detail": response.text}
            raise ProblemError(response.status_code, problem)
        return response.json()

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.send(self.build("GET", path, params=params))

    def post(self, path: str, body: Any, *, idempotency_key: str | None = None) -> Any:
        return self.send(self.build("POST", path, body=body, idempotency_key=idempotency_key))

    def put(self, path: str, body: Any) -> Any:
        return self.send(self.build("PUT", path, body=body))
