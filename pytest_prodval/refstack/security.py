"""Users, password hashes and HS256 JWTs for the reference stack, with the standard library only."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import secrets
import time
from typing import Any

REFRESH_TTL_S = 24 * 3600


class TokenError(Exception):
    """A token that is malformed, badly signed, of the wrong kind or expired."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_HEADER = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())


# Opaque tokens (no readable `exp`): what an auth service that does not issue JWTs looks
# like to a client, the case where only LOADTEST_AUTH_TOKEN_TTL_S tells the TTL (plan §3.5).
_OPAQUE = "opq_"


class Jwt:
    """HS256 signer/verifier with a per-process random secret (tokens die with the stack)."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or secrets.token_bytes(32)

    def issue(self, claims: dict[str, Any]) -> str:
        """A signed token for `claims`."""
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{_HEADER}.{payload}"
        signature = hmac.new(self._secret, signing_input.encode("ascii"), hashlib.sha256).digest()
        return f"{signing_input}.{_b64(signature)}"

    @staticmethod
    def opaque(token: str) -> str:
        """The token wrapped so that clients cannot read its claims (fault `opaque_tokens`)."""
        return _OPAQUE + _b64(token.encode("ascii")[::-1])

    def verify(self, token: str, *, kind: str, now: float | None = None) -> dict[str, Any]:
        """The claims of a valid, unexpired token of `kind` ("access" or "refresh")."""
        try:
            if token.startswith(_OPAQUE):
                token = _unb64(token[len(_OPAQUE):]).decode("ascii")[::-1]
            header, payload, signature = token.split(".")
            expected = hmac.new(self._secret, f"{header}.{payload}".encode("ascii"), hashlib.sha256).digest()
            if not hmac.compare_digest(expected, _unb64(signature)):
                raise TokenError("invalid_token", "bad signature")
            claims: dict[str, Any] = json.loads(_unb64(payload))
        except TokenError:
            raise
        except Exception:
            raise TokenError("invalid_token", "malformed token") from None
        if claims.get("typ") != kind:
            raise TokenError("invalid_token", f"not an {kind} token")
        if (now if now is not None else time.time()) >= claims.get("exp", 0):
            raise TokenError("token_expired", "token expired")
        return claims


@dataclasses.dataclass
class User:
    """A registered user; the password is kept as salt + sha256 only."""

    id: str
    email: str
    salt: bytes
    digest: bytes

    def public(self) -> dict[str, str]:
        """The user as the API shows it."""
        return {"id": self.id, "email": self.email}


def hash_password(password: str, salt: bytes) -> bytes:
    """One salted sha256: deliberately cheap, because this is a load-test target, not a real
    user store (a real service uses a slow KDF such as argon2/bcrypt)."""
    return hashlib.sha256(salt + password.encode("utf-8")).digest()


class Users:
    """The in-memory user store."""

    def __init__(self) -> None:
        self._by_email: dict[str, User] = {}

    def __len__(self) -> int:
        return len(self._by_email)

    def get(self, email: str) -> User | None:
        """The user with this e-mail (case-insensitive), if any."""
        return self._by_email.get(email.lower())

    def register(self, email: str, password: str) -> User | None:
        """A new user, or None when the e-mail is taken."""
        key = email.lower()
        if key in self._by_email:
            return None
        salt = secrets.token_bytes(16)
        user = User(id=f"u_{secrets.token_hex(8)}", email=key, salt=salt, digest=hash_password(password, salt))
        self._by_email[key] = user
        return user

    def set_password(self, user: User, password: str) -> None:
        """Replace a user's password (admin reset)."""
        user.salt = secrets.token_bytes(16)
        user.digest = hash_password(password, user.salt)

    def check(self, email: str, password: str) -> User | None:
        """The user if the password is right."""
        user = self.get(email)
        if user is None or not hmac.compare_digest(user.digest, hash_password(password, user.salt)):
            return None
        return user


def issue_tokens(jwt: Jwt, user: User, *, ttl_s: int, with_expires_in: bool, opaque: bool = False) -> dict[str, Any]:
    """The login/refresh body: access + refresh token, `expiresIn` unless a fault omits it."""
    now = int(time.time())
    access = jwt.issue({"sub": user.id, "email": user.email, "typ": "access", "iat": now, "exp": now + ttl_s,
                        "jti": secrets.token_hex(6)})
    if opaque:
        access = jwt.opaque(access)
    refresh = jwt.issue({"sub": user.id, "email": user.email, "typ": "refresh", "iat": now,
                         "exp": now + max(REFRESH_TTL_S, ttl_s), "jti": secrets.token_hex(6)})
    body: dict[str, Any] = {"accessToken": access, "refreshToken": refresh}
    if with_expires_in:
        body["expiresIn"] = ttl_s
    body["user"] = user.public()
    return body
