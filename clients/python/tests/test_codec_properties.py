"""Property tests of the decoder: it refuses bad bytes only with its own error, and a
stream decodes the same however it is split into reads."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tern import _codec as c
from tests.test_vectors import VALUES, load

SERVER_VECTORS = [data for name, data in load() if name.startswith("server.")]
CLIENT_VECTORS = [data for name, data in load() if name.startswith("client.")]


def drain(decoder: c.ServerFrameDecoder) -> list[c.ServerFrame]:
    out = []
    while (f := decoder.next()) is not None:
        out.append(f)
    return out


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_raise_only_codec_errors(data: bytes) -> None:
    d = c.ServerFrameDecoder()
    d.feed(data)
    try:
        drain(d)
    except c.CodecError:
        pass


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SERVER_VECTORS + CLIENT_VECTORS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert"]))
        if op == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        elif op == "cut" and data:
            i = draw(st.integers(0, len(data) - 1))
            del data[i]
        else:
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


@settings(max_examples=600, deadline=None)
@given(mutated())
def test_mutated_frames_raise_only_codec_errors(data: bytes) -> None:
    for decoder in (c.ServerFrameDecoder(), c.ClientFrameDecoder()):
        decoder.feed(data)
        try:
            while decoder.next() is not None:
                pass
        except c.CodecError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(SERVER_VECTORS), min_size=1, max_size=12), st.data())
def test_split_anywhere_decodes_identically(frames: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(frames)
    whole = c.ServerFrameDecoder()
    whole.feed(stream)
    expected = drain(whole)
    assert len(expected) == len(frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    split = c.ServerFrameDecoder()
    got: list[c.ServerFrame] = []
    for piece in pieces:
        split.feed(piece)
        got.extend(drain(split))
    assert got == expected
    assert split.buffered == 0


def test_every_server_value_round_trips_through_a_split_stream() -> None:
    values = [v for (kind, v) in VALUES.values() if kind == "server"]
    stream = b"".join(c.encode_server_frame(v) for v in values)  # type: ignore[arg-type]
    d = c.ServerFrameDecoder()
    got: list[c.ServerFrame] = []
    for i in range(len(stream)):
        d.feed(stream[i : i + 1])
        got.extend(drain(d))
    assert got == values
