"""Users, the register policy and HS256 JWTs shaped like RingRift's, with the standard library only."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import re
import secrets
import time
import uuid
from typing import Any

REFRESH_TTL_S = 7 * 24 * 3600
AUDIENCE = "ringrift-client"
ISSUER = "ringrift-api"
USERNAME_RE = re.compile(r"[A-Za-z0-9_-]{3,20}")
EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


class TokenError(Exception):
    """A token that is malformed, badly signed, for another audience or expired."""

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
    """HS256 signer/verifier; access and refresh tokens have separate per-process secrets (like
    RingRift's JWT_SECRET / JWT_REFRESH_SECRET), so one kind never passes for the other."""

    def __init__(self, access_secret: bytes | None = None, refresh_secret: bytes | None = None) -> None:
        self._secrets = {"access": access_secret or secrets.token_bytes(32),
                         "refresh": refresh_secret or secrets.token_bytes(32)}

    def issue(self, claims: dict[str, Any], *, kind: str) -> str:
        """A signed token for `claims`."""
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{_HEADER}.{payload}"
        signature = hmac.new(self._secrets[kind], signing_input.encode("ascii"), hashlib.sha256).digest()
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
            expected = hmac.new(self._secrets[kind], f"{header}.{payload}".encode("ascii"), hashlib.sha256).digest()
            if not hmac.compare_digest(expected, _unb64(signature)):
                raise TokenError("AUTH_TOKEN_INVALID", "invalid token signature")
            claims: dict[str, Any] = json.loads(_unb64(payload))
        except TokenError:
            raise
        except Exception:
            raise TokenError("AUTH_TOKEN_INVALID", "malformed token") from None
        if claims.get("aud") != AUDIENCE or claims.get("iss") != ISSUER or not isinstance(claims.get("userId"), str):
            raise TokenError("AUTH_TOKEN_INVALID", "token for another audience")
        if (now if now is not None else time.time()) >= claims.get("exp", 0):
            raise TokenError("AUTH_TOKEN_EXPIRED", "token expired")
        return claims


@dataclasses.dataclass
class User:
    """A registered user; the password is kept as salt + sha256 only."""

    id: str
    email: str
    username: str
    salt: bytes
    digest: bytes
    role: str = "USER"
    token_version: int = 0

    def public(self) -> dict[str, str]:
        """The user as the API shows it."""
        return {"id": self.id, "email": self.email, "username": self.username, "role": self.role}


def hash_password(password: str, salt: bytes) -> bytes:
    """One salted sha256: deliberately cheap, because this is a load-test target, not a real
    user store (a real service uses a slow KDF such as bcrypt)."""
    return hashlib.sha256(salt + password.encode("utf-8")).digest()


def registration_problem(body: dict[str, Any]) -> str | None:
    """Why a register body breaks RingRift's policy (one sentence naming the rule), or None."""
    username, email = body.get("username"), body.get("email")
    password, confirm = body.get("password"), body.get("confirmPassword")
    if not isinstance(username, str) or not USERNAME_RE.fullmatch(username):
        return "username must be 3-20 characters of letters, digits, _ or -"
    if not isinstance(email, str) or not EMAIL_RE.fullmatch(email):
        return "email must be a valid e-mail address"
    if not isinstance(password, str) or not 8 <= len(password) <= 128:
        return "password must be 8-128 characters long"
    if not re.search(r"[a-z]", password):
        return "password must contain a lower-case letter"
    if not re.search(r"[A-Z]", password):
        return "password must contain an upper-case letter"
    if not re.search(r"[0-9]", password):
        return "password must contain a digit"
    if confirm != password:
        return "confirmPassword must match password"
    return None


class Users:
    """The in-memory user store (e-mail and username unique, case-insensitive)."""

    def __init__(self) -> None:
        self._by_email: dict[str, User] = {}
        self._by_username: dict[str, User] = {}
        self._by_id: dict[str, User] = {}

    def __len__(self) -> int:
        return len(self._by_email)

    def get(self, email: str) -> User | None:
        """The user with this e-mail, if any."""
        return self._by_email.get(email.lower())

    def by_id(self, user_id: str) -> User | None:
        """The user with this id, if any."""
        return self._by_id.get(user_id)

    def conflict(self, email: str, username: str) -> str | None:
        """`EMAIL_EXISTS` / `USERNAME_EXISTS` when taken, else None."""
        if email.lower() in self._by_email:
            return "EMAIL_EXISTS"
        if username.lower() in self._by_username:
            return "USERNAME_EXISTS"
        return None

    def register(self, email: str, username: str, password: str) -> User:
        """A new user (call `conflict` first)."""
        salt = secrets.token_bytes(16)
        user = User(id=str(uuid.uuid4()), email=email.lower(), username=username, salt=salt,
                    digest=hash_password(password, salt))
        self._by_email[user.email] = user
        self._by_username[username.lower()] = user
        self._by_id[user.id] = user
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


def issue_tokens(jwt: Jwt, user: User, *, ttl_s: int, opaque: bool = False) -> tuple[str, str]:
    """(access token, refresh token) with RingRift's claims: userId, email, tv, iat, exp, aud, iss (no sub)."""
    now = int(time.time())
    base = {"userId": user.id, "email": user.email, "tv": user.token_version, "iat": now, "aud": AUDIENCE,
            "iss": ISSUER}
    access = jwt.issue({**base, "exp": now + ttl_s}, kind="access")
    if opaque:
        access = jwt.opaque(access)
    # A nonce keeps two refresh tokens of the same second apart.
    refresh = jwt.issue({**base, "exp": now + max(REFRESH_TTL_S, ttl_s), "jti": secrets.token_hex(8)}, kind="refresh")
    return access, refresh
