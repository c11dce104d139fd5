"""Settings, read from the environment (and a `.env` file in the working directory)."""

from __future__ import annotations

from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import platformdirs
from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _default_home() -> Path:
    return platformdirs.user_data_path("clearinghouse")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "CLEARINGHOUSE_DATABASE_URL"),
        description="PostgreSQL to use; when unset, an embedded server is started in `home`.",
    )
    database_replica_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_REPLICA_URL", "CLEARINGHOUSE_DATABASE_REPLICA_URL"),
        description="A streaming replica of the database: the auditors' and finance's reads go "
        "there while it is no more than `replica_max_lag_seconds` behind, to the primary "
        "otherwise.",
    )
    replica_max_lag_seconds: float = Field(
        default=10,
        gt=0,
        validation_alias=AliasChoices("CLEARINGHOUSE_REPLICA_MAX_LAG_SECONDS"),
        description="How far behind the primary the replica may be for a read to go there.",
    )
    home: Path = Field(
        default_factory=_default_home,
        validation_alias=AliasChoices("CLEARINGHOUSE_HOME"),
        description="Data folder: the embedded PostgreSQL cluster and generated files live here.",
    )
    timezone: str = Field(
        default="Asia/Shanghai",
        validation_alias=AliasChoices("CLEARINGHOUSE_TIMEZONE"),
        description="The coalition's time zone: business dates and settlement cut-offs use it.",
    )

    jobs: bool = Field(
        default=True,
        validation_alias=AliasChoices("CLEARINGHOUSE_JOBS"),
        description="Whether the server's processes run the periodic jobs (one of them at a "
        "time); off where `clearinghouse jobs run` runs them.",
    )

    issuance_limit_fen: int = Field(
        default=10_000_000,
        ge=0,
        validation_alias=AliasChoices("CLEARINGHOUSE_ISSUANCE_LIMIT_FEN"),
        description="A new partner's issuance limit in fen (unsettled issuance at the issue "
        "price), unless `partner create --limit-fen` gives one.",
    )

    rate_partner_requests: int = Field(
        default=5000,
        ge=1,
        validation_alias=AliasChoices("CLEARINGHOUSE_RATE_PARTNER_REQUESTS"),
        description="Signed requests one partner may send per 10 seconds, every server and "
        "worker together; more are answered 429.",
    )

    rate_source_failures: int = Field(
        default=30,
        ge=1,
        validation_alias=AliasChoices("CLEARINGHOUSE_RATE_SOURCE_FAILURES"),
        description="Failed authentications one address may make per minute (signatures, "
        "bearer tokens, console sign-ins); past it, the address is refused everything (429) "
        "until the minute ends.",
    )

    webhooks_dev_http: bool = Field(
        default=False,
        validation_alias=AliasChoices("CLEARINGHOUSE_WEBHOOKS_DEV_HTTP"),
        description="Development and tests only: webhook URLs may be plain http:// on a "
        "loopback address (127.0.0.0/8, ::1, localhost); otherwise only https:// is taken.",
    )

    webhooks_private_targets: bool = Field(
        default=False,
        validation_alias=AliasChoices("CLEARINGHOUSE_WEBHOOKS_PRIVATE_TARGETS"),
        description="Whether webhooks may be sent to private, loopback or link-local addresses "
        "(a partner's endpoint inside the operator's own network); refused otherwise, so that "
        "an endpoint's URL cannot reach the clearing house's own network.",
    )

    language: str | None = Field(
        default=None,
        validation_alias=AliasChoices("CLEARINGHOUSE_LANGUAGE"),
        description="The console's language (a gettext catalogue such as zh_CN); English if unset.",
    )

    trusted_proxies: Annotated[tuple[IPv4Network | IPv6Network, ...], NoDecode] = Field(
        default=(),
        validation_alias=AliasChoices("CLEARINGHOUSE_TRUSTED_PROXIES"),
        description="Addresses or networks (CIDR), comma-separated, of the proxies in front of "
        "the server whose Request-Id header is kept as the request's id; from anyone else, "
        "the server makes its own.",
    )

    log_format: Literal["auto", "json", "text"] = Field(
        default="auto",
        validation_alias=AliasChoices("CLEARINGHOUSE_LOG_FORMAT"),
        description="Logs as one JSON object a line (json) or as text; auto: text in a "
        "terminal, JSON otherwise.",
    )

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(ip_network(part.strip()) for part in value.split(",") if part.strip())
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("database_url", "database_replica_url")
    @classmethod
    def _postgres_only(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        assert value is not None
        if not value.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
            raise ValueError("a database URL must be a postgresql:// URL")
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
