"""NATS header blocks (`NATS/1.0[ status[ description]]\\r\\n`, `Name: value\\r\\n`..., `\\r\\n`).

Owns: building a block from names and values, and reading one into an ordered,
case-insensitive view. Never: changes a block it is given as bytes (the broker carries
blocks byte for byte between ports).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

HeadersInput = Mapping[str, str | Iterable[str]] | Iterable[tuple[str, str]] | bytes


class Headers:
    """An ordered multimap of header names (case-insensitive lookup) to values."""

    __slots__ = ("_items", "description", "status")

    def __init__(self, items: Iterable[tuple[str, str]] = (), status: int | None = None) -> None:
        self._items: list[tuple[str, str]] = []
        self.status = status
        self.description = ""
        for k, v in items:
            self.append(k, v)

    def append(self, name: str, value: str) -> None:
        if not name or any(c in name for c in ":\r\n ") or any(c in value for c in "\r\n"):
            raise ValueError(f"invalid header {name!r}: {value!r}")
        self._items.append((name, value))

    def get(self, name: str) -> str | None:
        low = name.lower()
        return next((v for k, v in self._items if k.lower() == low), None)

    def get_all(self, name: str) -> list[str]:
        low = name.lower()
        return [v for k, v in self._items if k.lower() == low]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Headers)
            and self._items == other._items
            and (self.status, self.description) == (other.status, other.description)
        )

    def __repr__(self) -> str:
        return f"Headers({self._items!r}, status={self.status!r})"

    def encode(self) -> bytes:
        first = "NATS/1.0"
        if self.status is not None:
            first += f" {self.status}" + (f" {self.description}" if self.description else "")
        lines = [first] + [f"{k}: {v}" for k, v in self._items]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    @staticmethod
    def parse(block: bytes) -> Headers:
        """Reads a block leniently: lines without a colon are skipped."""
        text = block.decode("utf-8", "replace")
        lines = text.split("\r\n")
        h = Headers()
        first = lines[0].split(" ", 2) if lines else []
        if len(first) >= 2 and first[1].isdigit():
            h.status = int(first[1])
            h.description = first[2] if len(first) > 2 else ""
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if sep:
                h._items.append((name.strip(), value.strip()))
        return h


def encode_headers(headers: HeadersInput | Headers | None) -> bytes | None:
    """A header block from bytes (as is), a `Headers`, a mapping or pairs; None for None."""
    if headers is None:
        return None
    if isinstance(headers, bytes):
        return headers
    if isinstance(headers, Headers):
        return headers.encode()
    h = Headers()
    if isinstance(headers, Mapping):
        for k, v in headers.items():
            for one in [v] if isinstance(v, str) else v:
                h.append(k, one)
    else:
        for k, v in headers:
            h.append(k, v)
    return h.encode()
