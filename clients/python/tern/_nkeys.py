"""NATS nkeys for the binary protocol's CHALLENGE: user seeds, public keys, ed25519 signing.

Owns: decoding a user seed (`SU...`) and a `.creds` file, deriving the public key
(`U...`), and signing a nonce (RFC 8032 ed25519, in pure Python: one signature per
connection, a few milliseconds). Never: prints, logs or puts a seed in an exception text;
verifies signatures (the broker does).
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from .errors import CredentialsError

_PREFIX_SEED = 18 << 3
_PREFIX_USER = 20 << 3

# ed25519 over edwards25519 (RFC 8032, section 5.1), with extended coordinates.
_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P
_Point = tuple[int, int, int, int]


def _add(a: _Point, b: _Point) -> _Point:
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    aa = (y1 - x1) * (y2 - x2) % _P
    bb = (y1 + x1) * (y2 + x2) % _P
    cc = 2 * t1 * t2 * _D % _P
    dd = 2 * z1 * z2 % _P
    e, f, g, h = bb - aa, dd - cc, dd + cc, bb + aa
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _mul(s: int, p: _Point) -> _Point:
    q: _Point = (0, 1, 1, 0)
    while s:
        if s & 1:
            q = _add(q, p)
        p = _add(p, p)
        s >>= 1
    return q


def _recover_x(y: int) -> int:
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P)
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * pow(2, (_P - 1) // 4, _P) % _P
    return _P - x if x & 1 else x


_GY = 4 * pow(5, _P - 2, _P) % _P
_GX = _recover_x(_GY)
_G: _Point = (_GX, _GY, 1, _GX * _GY % _P)


def _compress(p: _Point) -> bytes:
    x, y, z, _ = p
    zi = pow(z, _P - 2, _P)
    x, y = x * zi % _P, y * zi % _P
    return int.to_bytes(y | ((x & 1) << 255), 32, "little")


def _expand(secret: bytes) -> tuple[int, bytes]:
    h = hashlib.sha512(secret).digest()
    a = int.from_bytes(h[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    return a, h[32:]


def ed25519_public(secret: bytes) -> bytes:
    a, _ = _expand(secret)
    return _compress(_mul(a, _G))


def ed25519_sign(secret: bytes, msg: bytes) -> bytes:
    a, prefix = _expand(secret)
    pub = _compress(_mul(a, _G))
    r = int.from_bytes(hashlib.sha512(prefix + msg).digest(), "little") % _L
    rs = _compress(_mul(r, _G))
    k = int.from_bytes(hashlib.sha512(rs + pub + msg).digest(), "little") % _L
    s = (r + k * a) % _L
    return rs + int.to_bytes(s, 32, "little")


def _crc16(data: bytes) -> int:
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def _b32decode(text: str) -> bytes:
    return base64.b32decode(text + "=" * (-len(text) % 8))


class NKey:
    """A user nkey from its seed. `public` is `U...`; `sign(nonce)` answers a CHALLENGE."""

    __slots__ = ("_secret", "public")

    def __init__(self, seed: str, source: str = "nkey_seed") -> None:
        try:
            raw = _b32decode(seed.strip())
        except ValueError:
            raise CredentialsError(f"{source}: not a base32 nkey seed") from None
        if len(raw) != 36:
            raise CredentialsError(f"{source}: not an nkey seed (wrong length)")
        body, crc = raw[:34], int.from_bytes(raw[34:], "little")
        if _crc16(body) != crc:
            raise CredentialsError(f"{source}: nkey seed checksum does not match")
        b1 = raw[0] & 0xF8
        b2 = ((raw[0] & 0x07) << 5) | ((raw[1] & 0xF8) >> 3)
        if b1 != _PREFIX_SEED or b2 != _PREFIX_USER:
            raise CredentialsError(f"{source}: not a user seed (SU...)")
        self._secret = raw[2:34]
        pub = bytes([_PREFIX_USER]) + ed25519_public(self._secret)
        pub += _crc16(pub).to_bytes(2, "little")
        self.public = base64.b32encode(pub).decode().rstrip("=")

    def sign(self, nonce: bytes) -> bytes:
        """The nonce's signature, base64url without padding (86 characters)."""
        return base64.urlsafe_b64encode(ed25519_sign(self._secret, nonce)).rstrip(b"=")

    def __repr__(self) -> str:
        return f"NKey(public={self.public!r}, seed=<redacted>)"


# A block's value runs to the whitespace before its END line: a JWT is base64url, so it may
# hold `-` (and end with one).
_BLOCK = re.compile(r"-----BEGIN ([A-Z ]+)-----\s*(\S+)\s+-+END [A-Z ]+-+")


def read_creds(path: str | Path) -> tuple[NKey, str | None]:
    """The seed and JWT of a NATS `.creds` file (the JWT is None when there is none)."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise CredentialsError(f"{path}: cannot read: {e.strerror}") from None
    seed = jwt = None
    for kind, value in _BLOCK.findall(text):
        if "SEED" in kind:
            seed = value
        elif "JWT" in kind:
            jwt = value
    if seed is None:
        raise CredentialsError(f"{path}: no USER NKEY SEED block")
    return NKey(seed, str(path)), jwt
