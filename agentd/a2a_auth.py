"""How a proxy sends its external A2A agent's credential: by the scheme the agent's card
declares (docs/a2a.md). The token comes from the environment (``--auth-env VAR``); it is never
stored or logged, only the scheme and the header, query or cookie name.

- ``apiKeySecurityScheme``: the token as the header, query parameter or cookie it names;
- ``httpAuthSecurityScheme``: ``Authorization: SCHEME TOKEN`` (``Basic``: a ``user:password``
  token is base64-encoded; an encoded one is sent as it is);
- OAuth 2, OpenID Connect, or a card that declares nothing: ``Authorization: Bearer TOKEN``;
- a card that declares only mutual TLS: the client certificate (``--client-cert``), no token.

The first scheme of the card's ``security_requirements`` that can be used is chosen, else the
first of its ``security_schemes``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from a2a.types import a2a_pb2 as a2a


@dataclass(frozen=True)
class Credential:
    """Where the token goes: headers, query parameters and cookies (values are the token's)."""

    scheme: str = "bearer"  # what the log may say: the kind and the name, never the value
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    cookies: dict[str, str] = field(default_factory=dict)


def bearer(token: str) -> Credential:
    return Credential("bearer", {"Authorization": f"Bearer {token}"})


def _basic(token: str) -> str:
    if ":" not in token:
        try:
            base64.b64decode(token, validate=True)
            return token  # encoded already
        except (binascii.Error, ValueError):
            pass
    return base64.b64encode(token.encode()).decode()


def _from(s: a2a.SecurityScheme, token: str) -> Credential | None:
    kind = s.WhichOneof("scheme")
    if kind == "api_key_security_scheme":
        k = s.api_key_security_scheme
        where, name = k.location.lower(), k.name
        if not name:
            return None
        if where == "query":
            return Credential(f"api key in query parameter {name}", params={name: token})
        if where == "cookie":
            return Credential(f"api key in cookie {name}", cookies={name: token})
        return Credential(f"api key in header {name}", headers={name: token})
    if kind == "http_auth_security_scheme":
        scheme = s.http_auth_security_scheme.scheme or "Bearer"
        if scheme.lower() == "basic":
            return Credential("http basic", {"Authorization": f"Basic {_basic(token)}"})
        return Credential(f"http {scheme.lower()}", {"Authorization": f"{scheme} {token}"})
    if kind in ("oauth2_security_scheme", "open_id_connect_security_scheme"):
        return bearer(token)
    if kind == "mtls_security_scheme":
        return Credential("mutual tls")
    return None


def for_card(card: a2a.AgentCard, token: str) -> Credential:
    """How to send ``token`` to the agent of ``card``."""
    schemes = dict(card.security_schemes)
    names = [n for r in card.security_requirements for n in r.schemes if n in schemes]
    for name in [*names, *schemes]:
        got = _from(schemes[name], token)
        if got is not None:
            return got
    return bearer(token)
