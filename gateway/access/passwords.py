"""Password hashing (Argon2id) and the password rules.

The rules follow NIST SP 800-63B: length matters, composition rules do not. A password
must be at least ``password-min-length`` characters (at most 256), must not be one of the
most common passwords, a run of one character or a plain keyboard/number sequence, and
must not contain the username. Each refusal says which rule failed.

Hashing costs tens of milliseconds of CPU and memory on purpose: async callers use
``hash_password`` / ``verify_password``, which run it in a worker thread.
"""

from __future__ import annotations

import asyncio
import secrets
import string

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from gateway.errors import BadRequest

MAX_LENGTH = 256
GENERATED_LENGTH = 20
#: Letters and digits without the look-alikes (0/O, 1/l/I), so a password read out on
#: the phone or copied from a printout survives.
_ALPHABET = "".join(c for c in string.ascii_letters + string.digits if c not in "0O1lI")

#: The most common passwords of 12+ characters in public breach corpora (lower case).
COMMON_PASSWORDS = frozenset(
    {
        "password1234", "password12345", "password123456", "password1234567", "passwordpassword",
        "password!234", "p@ssw0rd1234", "p@ssword1234", "passw0rd1234", "mypassword123",
        "qwertyuiopas", "qwertyuiop12", "qwertyuiop123", "qwerty123456", "qwerty1234567",
        "1qaz2wsx3edc", "1q2w3e4r5t6y", "1q2w3e4r5t6y7u", "q1w2e3r4t5y6", "zaq12wsxcde3",
        "asdfghjkl123", "zxcvbnm12345", "iloveyou1234", "iloveyouiloveyou", "letmein12345",
        "welcome12345", "welcome123456", "administrator", "administrator1", "admin1234567",
        "adminadmin123", "changeme1234", "changeme12345", "trustno11234", "football1234",
        "baseball1234", "sunshine1234", "princess1234", "monkey123456", "dragon123456",
        "abc123456789", "abcd12345678", "aaaaaa111111", "111111aaaaaa", "123123123123",
        "123qweasdzxc", "qweasdzxc123", "passwort1234", "hallo1234567", "citygate1234",
        "citygate12345", "citygatecitygate",
    }
)

#: Keyboard rows and the alphabet: a password that is a stretch of one is refused.
_SEQUENCES = (
    "0123456789012345678901234567890",
    "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz",
    "qwertyuiopasdfghjklzxcvbnmqwertyuiop",
    "qwertzuiopasdfghjklyxcvbnm",
    "azertyuiopqsdfghjklmwxcvbn",
)

_HASHER = PasswordHasher()  # immutable parameters (Argon2id, RFC 9106 low-memory profile)


def check_password(password: str, *, username: str = "", min_length: int = 12) -> None:
    """Raise ``BadRequest`` naming the first rule ``password`` breaks."""
    if len(password) < min_length:
        raise BadRequest(f"the password must be at least {min_length} characters long (it has {len(password)})")
    if len(password) > MAX_LENGTH:
        raise BadRequest(f"the password must be at most {MAX_LENGTH} characters long")
    lowered = password.lower()
    if len(set(lowered)) == 1:
        raise BadRequest("the password must not be one character repeated")
    if lowered in COMMON_PASSWORDS:
        raise BadRequest("the password is one of the most common passwords; choose another")
    if any(lowered in seq or lowered in seq[::-1] for seq in _SEQUENCES):
        raise BadRequest("the password must not be a keyboard or number sequence")
    name = username.lower()
    if name and (name == lowered or (len(name) >= 3 and name in lowered)):
        raise BadRequest("the password must not contain the username")


def generate_password(*, username: str = "", min_length: int = 12) -> str:
    """A random password of 20 letters and digits that passes ``check_password``."""
    length = max(GENERATED_LENGTH, min_length)
    while True:
        candidate = "".join(secrets.choice(_ALPHABET) for _ in range(length))
        try:
            check_password(candidate, username=username, min_length=min_length)
        except BadRequest:  # astronomically unlikely; draw again
            continue
        return candidate


def hash_password_sync(password: str, hasher: PasswordHasher = _HASHER) -> str:
    return hasher.hash(password)


def verify_password_sync(password_hash: str, password: str, hasher: PasswordHasher = _HASHER) -> bool:
    try:
        return hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def hash_password(password: str, hasher: PasswordHasher = _HASHER) -> str:
    return await asyncio.to_thread(hasher.hash, password)


async def verify_password(password_hash: str, password: str, hasher: PasswordHasher = _HASHER) -> bool:
    """True if ``password`` matches; any malformed hash counts as a mismatch."""
    return await asyncio.to_thread(verify_password_sync, password_hash, password, hasher)


def needs_rehash(password_hash: str, hasher: PasswordHasher = _HASHER) -> bool:
    """True when the hash was made with weaker parameters than the current ones."""
    try:
        return hasher.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True
