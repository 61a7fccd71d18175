"""Bundles (DESIGN.md "Bundles"): round trips, the shared golden bundle and probes, every cut and defect."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import bundle, canonical, statement
from ledger.bundle import FORMAT, BundleReader, encode_header, open_bundle, write_bundle
from ledger.errors import EncodingInvalid, NotALedger
from tests.conftest import SHARED

VECTORS = SHARED / "vectors" / "custody"
needs_vectors = pytest.mark.skipif(not (VECTORS / "golden.bundle").exists(),
                                   reason=f"shared vectors not found at {VECTORS}")

ORIGIN = "test.example/bundle"


def wire(body: bytes, signature: bytes = bytes(64)) -> bytes:
    return msgpack.packb([body, signature], use_bin_type=True)  # type: ignore[no-any-return]


WIRES = [wire(b"genesis"), wire(b"x" * 300, b"\x01" * 64), wire(b"y" * 70000, b"\x02" * 64)]
CHECKPOINTS = ["origin\n2\nroot=\n\n— origin sig=\n", "origin\n3\nroot=\n\n— origin sig=\n"]


def make(origin: str = ORIGIN, wires: list[bytes] = WIRES, checkpoints: list[str] = CHECKPOINTS) -> bytes:
    out = io.BytesIO()
    assert write_bundle(out, origin, iter(wires), iter(checkpoints)) == len(wires)
    return out.getvalue()


def read_all(data: bytes, chunk_size: int = bundle.CHUNK_SIZE) -> tuple[str, list[bytes], list[str]]:
    reader = open_bundle(io.BytesIO(data), chunk_size=chunk_size)
    wires: list[bytes] = []
    for index, raw in reader.statements():
        assert index == len(wires)
        wires.append(raw)
    return reader.origin, wires, list(reader.checkpoints())


def read_until_error(data: bytes, chunk_size: int = bundle.CHUNK_SIZE) -> tuple[list[bytes], EncodingInvalid]:
    """The statements read before the defect, and the defect."""
    reader = open_bundle(io.BytesIO(data), chunk_size=chunk_size)
    wires: list[bytes] = []
    with pytest.raises(EncodingInvalid) as caught:
        for _, raw in reader.statements():
            wires.append(raw)
        list(reader.checkpoints())
    return wires, caught.value


# --- round trips --------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 2, 7, 300, bundle.CHUNK_SIZE])
def test_round_trip_gives_the_same_bytes(chunk_size: int) -> None:
    data = make()
    assert data.startswith(canonical.pack({"format": FORMAT, "origin": ORIGIN}))
    assert read_all(data, chunk_size) == (ORIGIN, WIRES, CHECKPOINTS)


def test_empty_log_and_no_checkpoints() -> None:
    data = make(wires=[], checkpoints=[])
    assert data == encode_header(ORIGIN)
    assert read_all(data) == (ORIGIN, [], [])


def test_checkpoints_skip_unread_statements_and_counters_follow() -> None:
    data = make()
    reader = open_bundle(io.BytesIO(data))
    assert reader.statement_count == 0
    assert list(reader.checkpoints()) == CHECKPOINTS
    assert reader.statement_count == len(WIRES)
    assert reader.bytes_read == len(data)
    assert list(reader.statements()) == []


def test_reader_streams() -> None:
    data = make(wires=[wire(bytes([i]) * 100) for i in range(200)])
    stream = io.BytesIO(data)
    reader = open_bundle(stream, chunk_size=1024)
    next(reader.statements())
    assert stream.tell() <= 2048 < len(data)


def test_writer_refuses_what_would_not_read_back() -> None:
    good = WIRES[0]
    cases = {
        "three elements": msgpack.packb([b"a", b"b", b"c"], use_bin_type=True),
        "short signature": wire(b"body", bytes(63)),
        "text body": msgpack.packb(["body", bytes(64)], use_bin_type=True),
        "bin16 for a short body": b"\x92\xc5\x00\x04body\xc4\x40" + bytes(64),
        "extra byte": good + b"\x00",
        "cut": good[:-1],
    }
    for name, bad in cases.items():
        with pytest.raises(EncodingInvalid) as caught:
            write_bundle(io.BytesIO(), ORIGIN, [good, bad], [])
        assert caught.value.index == 1, name
    with pytest.raises(EncodingInvalid):
        write_bundle(io.BytesIO(), "", [], [])
    with pytest.raises(EncodingInvalid):
        write_bundle(io.BytesIO(), ORIGIN, [], [b"not text"])  # type: ignore[list-item]


def test_raw_objects_and_their_offsets() -> None:
    data = make()
    found = list(bundle._iter_raw_objects(io.BytesIO(data), chunk_size=5))
    expected = [encode_header(ORIGIN), *WIRES, *(msgpack.packb(text) for text in CHECKPOINTS)]
    assert [raw for _, raw in found] == expected
    assert [offset for offset, _ in found] == [sum(map(len, expected[:i])) for i in range(len(expected))]


# --- the header ---------------------------------------------------------------------------------------


def header(*pairs: tuple[object, object]) -> bytes:
    """A map with `pairs` in the given order, encoded by plain msgpack (not necessarily canonical)."""
    return msgpack.packb(dict(pairs), use_bin_type=True)  # type: ignore[no-any-return]


NOT_BUNDLES = {
    "empty": b"",
    "reserved byte": b"\xc1",
    "text": b"PK\x03\x04 this is a zip file",
    "array first": msgpack.packb([FORMAT, ORIGIN]),
    "the format as text": msgpack.packb(FORMAT),
    "map without format": header(("origin", ORIGIN)),
    "another format": header(("format", "custody-bundle/0"), ("origin", ORIGIN)),
    "format as bin": header(("format", FORMAT.encode()), ("origin", ORIGIN)),
    "map cut before format": header(("format", FORMAT), ("origin", ORIGIN))[:10],
    "map of garbage": b"\x81\xc1",
}

BAD_HEADERS = {
    "extra key": header(("format", FORMAT), ("origin", ORIGIN), ("x", 1)),
    "extra int key": header(("format", FORMAT), ("origin", ORIGIN), (1, 1)),
    "no origin": header(("format", FORMAT)),
    "origin not text": header(("format", FORMAT), ("origin", b"bin")),
    "origin empty": header(("format", FORMAT), ("origin", "")),
    "keys reversed": header(("origin", ORIGIN), ("format", FORMAT)),
    "str8 header": b"\x82\xa6format\xd9\x10" + FORMAT.encode() + b"\xa6origin\xa1o",
    "map16 header": b"\xde\x00\x02" + encode_header("o")[1:],
    "duplicate format": b"\x82\xa6format\xb0" + FORMAT.encode() + b"\xa6format\xb0" + FORMAT.encode(),
    "origin not UTF-8": b"\x82\xa6format\xb0" + FORMAT.encode() + b"\xa6origin\xa2\xff\xfe",
    "cut in origin": encode_header(ORIGIN)[:-3],
    "array as a key": b"\x83\xa6format\xb0" + FORMAT.encode() + b"\xa6origin\xa1o\x91\x01\x01",
}


@pytest.mark.parametrize("name", NOT_BUNDLES)
def test_not_a_bundle(name: str) -> None:
    with pytest.raises(NotALedger, match="is not a custody bundle"):
        open_bundle(io.BytesIO(NOT_BUNDLES[name] + make()[30:]), name="f.bundle")


@pytest.mark.parametrize("name", BAD_HEADERS)
def test_bad_header_is_an_encoding_failure(name: str) -> None:
    data = BAD_HEADERS[name] + (WIRES[0] if not name.startswith("cut") else b"")
    with pytest.raises(EncodingInvalid) as caught:
        open_bundle(io.BytesIO(data))
    assert caught.value.index is None and caught.value.check == "encoding"


def test_not_a_bundle_message_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "zip.bundle"
    path.write_bytes(b"PK\x03\x04")
    with path.open("rb") as stream, pytest.raises(NotALedger, match=r"zip\.bundle is not a custody bundle"):
        open_bundle(stream)


def test_oversized_header() -> None:
    big = encode_header("o" * (bundle.MAX_HEADER_SIZE + 1))
    for chunk_size in (1024, bundle.CHUNK_SIZE):
        with pytest.raises(EncodingInvalid, match="header"):
            open_bundle(io.BytesIO(big), chunk_size=chunk_size)
    # An arbitrary file that happens to start like a map is not read far.
    stream = io.BytesIO(b"\x81\xdb\xff\xff\xff\xff" + bytes(10 << 20))
    with pytest.raises(NotALedger):
        open_bundle(stream, chunk_size=4096)
    assert stream.tell() < 1 << 20


# --- defects after the header -------------------------------------------------------------------------


def test_every_cut_is_a_clean_failure_or_a_shorter_bundle() -> None:
    data = make(wires=[wire(b"a" * 10), wire(b"b" * 300)], checkpoints=["cp-one", "cp-two"])
    header_size = len(encode_header(ORIGIN))
    ends = [header_size]
    for raw in [wire(b"a" * 10), wire(b"b" * 300)] + [msgpack.packb(t) for t in ("cp-one", "cp-two")]:
        ends.append(ends[-1] + len(raw))
    for cut in range(len(data)):
        stream = data[:cut]
        if cut < header_size:
            with pytest.raises((NotALedger, EncodingInvalid)):
                read_all(stream)
        elif cut in ends:
            origin, wires, checkpoints = read_all(stream)
            assert origin == ORIGIN and len(wires) + len(checkpoints) == ends.index(cut)
        else:
            for chunk_size in (3, bundle.CHUNK_SIZE):
                wires, error = read_until_error(stream, chunk_size)
                objects = sum(1 for end in ends[1:] if end <= cut)
                assert wires == [wire(b"a" * 10), wire(b"b" * 300)][:objects]
                assert error.index == (objects if objects < 2 else None), cut
                assert "truncated" in error.detail


def test_cut_after_the_format_is_a_truncated_bundle() -> None:
    data = encode_header(ORIGIN)
    names_format = len(header(("format", FORMAT)))
    for cut in range(1, len(data)):
        kind = EncodingInvalid if cut >= names_format else NotALedger
        with pytest.raises(kind):
            open_bundle(io.BytesIO(data[:cut]))


@pytest.mark.parametrize(("garbage", "index"), [
    (b"\xc1", 3),  # no checkpoints: the defect is where statement 3 would be
    (b"\x92", 3),  # a cut statement
    (b"\x07", 3),  # an integer
    (b"\x81\xa1a\x01", 3),  # a map
    (msgpack.packb([b"a", b"b", b"c"]), 3),  # an array of 3
])
def test_garbage_after_statements(garbage: bytes, index: int) -> None:
    wires, error = read_until_error(make(checkpoints=[]) + garbage)
    assert wires == WIRES
    assert error.index == index


@pytest.mark.parametrize(("garbage", "index"), [
    (b"\xc1garbage", None),
    (b"\xa5abc", None),  # a cut checkpoint
    (b"\x07", None),
    (wire(b"late"), 3),  # a statement after the checkpoints
    (b"\x92\xc4", 3),  # a cut statement after the checkpoints
])
def test_garbage_after_checkpoints(garbage: bytes, index: int | None) -> None:
    reader = open_bundle(io.BytesIO(make() + garbage))
    assert [raw for _, raw in reader.statements()] == WIRES
    checkpoints = reader.checkpoints()
    assert [next(checkpoints), next(checkpoints)] == CHECKPOINTS
    with pytest.raises(EncodingInvalid) as caught:
        next(checkpoints)
    assert caught.value.index == index
    # The reader cannot go past the defect: asking again gives the same error.
    with pytest.raises(EncodingInvalid) as again:
        list(reader.checkpoints())
    assert again.value is caught.value


def test_a_checkpoint_between_statements() -> None:
    data = encode_header(ORIGIN) + WIRES[0] + msgpack.packb("cp") + WIRES[1]
    reader = open_bundle(io.BytesIO(data))
    assert list(reader.statements()) == [(0, WIRES[0])]
    with pytest.raises(EncodingInvalid, match="statement after") as caught:
        list(reader.checkpoints())
    assert caught.value.index == 1


def test_misplaced_object_among_statements_stops_after_the_statements_before_it() -> None:
    data = encode_header(ORIGIN) + WIRES[0] + msgpack.packb([b"a", b"b", b"c"]) + WIRES[1]
    wires, error = read_until_error(data)
    assert wires == [WIRES[0]]
    assert error.index == 1 and "array of 3" in error.detail


def test_bad_checkpoint_text() -> None:
    for raw in (b"\xa2\xff\xfe", b"\xd9\x02cp"):  # not UTF-8; a str8 header for two bytes
        wires, error = read_until_error(make(checkpoints=[]) + raw)
        assert wires == WIRES and error.index is None and "checkpoint 0" in error.detail


def test_any_two_element_array_is_handed_out_as_it_is() -> None:
    odd = [
        msgpack.packb([1, 2]),
        b"\xdc\x00\x02\xc4\x01a\xc4\x01b",  # array16
        b"\xdd\x00\x00\x00\x02\xa1a\xa1b",  # array32
        b"\x92\xc5\x00\x01a\xc4\x40" + bytes(64),  # a bin16 header
    ]
    data = encode_header(ORIGIN) + b"".join(odd)
    assert read_all(data)[1] == odd
    for raw in odd:
        with pytest.raises(EncodingInvalid):
            statement.decode(raw)


def test_too_deep_nesting() -> None:
    wires, error = read_until_error(encode_header(ORIGIN) + WIRES[0] + b"\x92" + b"\x91" * 100_000)
    assert wires == [WIRES[0]] and error.index == 1


# --- the shared vectors -------------------------------------------------------------------------------


@needs_vectors
def test_golden_bundle() -> None:
    vectors = json.loads((VECTORS / "statements.json").read_text())
    data = (VECTORS / "golden.bundle").read_bytes()
    origin, wires, checkpoints = read_all(data)
    assert origin == vectors["origin"]
    assert [raw.hex() for raw in wires] == [s["wire_hex"] for s in vectors["statements"]]
    assert len(wires) == 15 and len(checkpoints) == 2
    assert checkpoints[-1] == (VECTORS / "checkpoint.txt").read_text(encoding="utf-8")
    for raw in wires:
        statement.decode(raw)
    assert make(origin, wires, checkpoints) == data  # exporting what was read gives the same bytes


def probes() -> list[dict[str, object]]:
    path = VECTORS / "probes.json"
    found: list[dict[str, object]] = json.loads(path.read_text())["probes"] if path.exists() else []
    return found


STREAM_PROBES: dict[str, type[Exception]] = {
    "probes/truncated.bundle": EncodingInvalid, "probes/trailing-garbage.bundle": EncodingInvalid,
    "probes/bad-header.bundle": NotALedger, "probes/not-msgpack.bundle": NotALedger}


@needs_vectors
@pytest.mark.parametrize("name", STREAM_PROBES)
def test_stream_probes(name: str) -> None:
    with (VECTORS / name).open("rb") as stream, pytest.raises(STREAM_PROBES[name]) as caught:
        reader = open_bundle(stream)
        count = sum(1 for _ in reader.statements())
        list(reader.checkpoints())
    if STREAM_PROBES[name] is EncodingInvalid:
        assert count == 15 and isinstance(caught.value, EncodingInvalid) and caught.value.index is None


@needs_vectors
def test_every_other_probe_is_a_well_formed_stream() -> None:
    """The other probes' defects lie inside statements or checkpoints, which the reader hands out as is."""
    wrongly_failed = []
    for probe in probes():
        if probe["file"] in STREAM_PROBES:
            continue
        try:
            with (VECTORS / str(probe["file"])).open("rb") as stream:
                reader: BundleReader = open_bundle(stream)
                list(reader.statements())
                list(reader.checkpoints())
        except (NotALedger, EncodingInvalid) as e:
            wrongly_failed.append(f"{probe['file']}: {e}")
    assert wrongly_failed == []


@needs_vectors
def test_non_canonical_wire_probe_is_handed_out_for_decode_to_reject() -> None:
    with (VECTORS / "probes" / "non-canonical-wire.bundle").open("rb") as stream:
        wires = list(open_bundle(stream).statements())
    assert len(wires) == 15
    index, raw = wires[-1]
    with pytest.raises(EncodingInvalid, match="not canonical"):
        statement.decode(raw)
    assert index == 14


# --- properties ---------------------------------------------------------------------------------------


def read_everything(data: bytes, chunk_size: int) -> None:
    reader = open_bundle(io.BytesIO(data), chunk_size=chunk_size)
    for _ in reader.statements():
        pass
    for _ in reader.checkpoints():
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(1, 64))
def test_arbitrary_bytes_fail_only_as_designed(data: bytes, chunk_size: int) -> None:
    with contextlib.suppress(NotALedger, EncodingInvalid):
        read_everything(data, chunk_size)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(1, 64))
def test_arbitrary_bytes_after_a_header_are_never_not_a_bundle(data: bytes, chunk_size: int) -> None:
    with contextlib.suppress(EncodingInvalid):
        read_everything(encode_header(ORIGIN) + data, chunk_size)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=400), st.binary(min_size=64, max_size=64)), max_size=12),
       st.lists(st.text(max_size=80), max_size=3),
       st.text(min_size=1, max_size=40),
       st.integers(1, 512))
def test_round_trip_property(pairs: list[tuple[bytes, bytes]], checkpoints: list[str], origin: str,
                             chunk_size: int) -> None:
    wires = [wire(body, signature) for body, signature in pairs]
    assert read_all(make(origin, wires, checkpoints), chunk_size) == (origin, wires, checkpoints)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_single_byte_change_reads_or_fails_as_designed(data: st.DataObject) -> None:
    original = make(wires=WIRES[:2], checkpoints=CHECKPOINTS)
    position = data.draw(st.integers(0, len(original) - 1))
    value = data.draw(st.integers(0, 255).filter(lambda b: b != original[position]))
    mutated = original[:position] + bytes([value]) + original[position + 1:]
    try:
        origin, wires, checkpoints = read_all(mutated)
    except (NotALedger, EncodingInvalid):
        return
    assert (origin, wires, checkpoints) != (ORIGIN, WIRES[:2], CHECKPOINTS)
