"""Ed25519 points of small order (DESIGN.md "Who may sign": keys of small order are refused).

Such a key verifies signatures that no one's private key made. The test is curve arithmetic on the
edwards25519 curve of RFC 8032 §5.1: decode the point, double it three times, compare with the neutral
element. Its callers remember the answers (`rules.is_small_order`): the same few keys come up again.
"""

from __future__ import annotations

_P = 2**255 - 19  # RFC 8032 §5.1: the field
_D = (-121665 * pow(121666, -1, _P)) % _P  # RFC 8032 §5.1: the curve constant d
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)  # a square root of -1 mod p (RFC 8032 §5.1.3)


def _decode_point(raw: bytes) -> tuple[int, int] | None:
    """Affine (x, y) of an encoded point, accepting non-canonical y ≥ p as libsodium's blocklist does."""
    y = int.from_bytes(raw, "little")
    sign = y >> 255
    y = (y & ((1 << 255) - 1)) % _P
    u, v = (y * y - 1) % _P, (_D * y * y + 1) % _P
    x = (u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P)) % _P  # RFC 8032 §5.1.3
    if (v * x * x - u) % _P != 0:
        x = (x * _SQRT_M1) % _P
        if (v * x * x - u) % _P != 0:
            return None
    if x != 0 and x & 1 != sign:
        x = _P - x
    return x, y  # x == 0 with the sign bit set is the same point, encoded non-canonically


def _double(point: tuple[int, int]) -> tuple[int, int]:
    """2P on -x² + y² = 1 + d·x²·y² (complete affine formulas, RFC 8032 §5.1.4)."""
    x, y = point
    t = _D * x * x * y * y % _P
    return (2 * x * y * pow(1 + t, -1, _P) % _P, (y * y + x * x) * pow(1 - t, -1, _P) % _P)


def is_small_order(raw: bytes) -> bool:
    """True if the 32-byte encoding is a point of order 1, 2, 4 or 8 (eight points, fourteen encodings).

    Such a key verifies signatures that no one's private key made. An encoding that is not a curve point
    at all is not of small order (signature verification refuses it).
    """
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, not {len(raw)}")
    point = _decode_point(raw)
    if point is None:
        return False
    for _ in range(3):
        point = _double(point)
    return point == (0, 1)
