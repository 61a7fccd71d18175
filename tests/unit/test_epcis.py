"""EPCIS 2.0 export: schema validity, one event per step, the mapping table, trace-back, streaming."""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from nacl.signing import SigningKey, VerifyKey

from ledger import canonical, epcis, statement
from ledger.errors import BadInput, TimeInvalid
from ledger.statement import Statement
from tests.conftest import SHARED, schema_errors

SCHEMA_PATH = SHARED / "epcis" / "EPCIS-JSON-Schema.json"
VECTORS = SHARED / "vectors" / "custody" / "statements.json"

ORIGIN = "custody.example/h200-cn"
T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
HOUR = 3_600_000_000
CREATED = "2026-02-01T00:00:00Z"

# -- a small ledger, built by hand -------------------------------------------------------------------------


def _key(name: str) -> SigningKey:
    return SigningKey(name.encode().ljust(32, b"."))


KEYS = {name: _key(name) for name in ("authority", "tsmc", "kerry", "uslab", "cbp", "nvidia", "alibaba")}
ROLES = {"tsmc": "fab", "kerry": "carrier", "uslab": "inspector", "cbp": "customs", "nvidia": "exporter",
         "alibaba": "customer"}


def _public(name: str) -> bytes:
    return bytes(KEYS[name].verify_key)


def _kid(name: str) -> str:
    return statement.key_id(_public(name))


class _Ledger:
    def __init__(self) -> None:
        self.entries: list[tuple[int, Statement]] = []
        self.heads: dict[str, bytes] = {}

    def add(self, signer: str, kind: str, at: int, data: dict[str, Any],
            serials: tuple[str, ...] = ()) -> None:
        units = [(s, self.heads.get(s, statement.ZERO_HASH)) for s in serials]
        body = statement.encode_body(origin=ORIGIN, kind=kind, at=at, signer=_kid(signer), units=units,
                                     data=data)
        signature = KEYS[signer].sign(statement.signed_message(body)).signature
        st = statement.assemble(body, signature)
        for s in serials:
            self.heads[s] = st.hash
        self.entries.append((len(self.entries), st))


def _build() -> _Ledger:
    led = _Ledger()
    led.add("authority", "ledger_opened", T0, {"authorities": [_public("authority")],
                                                "operator": _public("authority"), "policy": "name = 'x'\n"})
    for name, role in ROLES.items():
        led.add("authority", "participant_registered", T0 + 1, {"id": name, "name": name.upper(),
                                                                 "country": "US", "roles": [role],
                                                                 "key": _public(name)})
    led.add("authority", "customer_approved", T0 + 2, {"id": "alibaba", "cap": 100, "license": "BIS-1"})
    all3 = ("H200-0001", "H200-0002", "H200-0003")
    led.add("tsmc", "fabricated", T0 + HOUR, {"model": "H200-SXM5-141GB", "site": "Fab 18, Tainan",
                                               "lot": "LOT-1"}, all3)
    led.add("kerry", "shipped_to_us", T0 + 2 * HOUR + 123_456, {"port_of_entry": "LAX", "waybill": "AWB 1/2"},
            all3)
    led.add("uslab", "inspected", T0 + 3 * HOUR, {"result": "pass", "site": "Lab 7, San José",
                                                   "country": "US", "report": "R-1"}, all3[:2])
    led.add("uslab", "inspected", T0 + 3 * HOUR + 1, {"result": "fail", "site": "Lab 7, San José",
                                                       "country": "US", "report": "R-2"}, all3[2:])
    led.add("cbp", "duty_paid", T0 + 4 * HOUR, {"entry": "ENT-0001", "entered_value": 9_000_000,
                                                 "duty": 2_250_000}, all3)
    led.add("authority", "policy_issued", T0 + 4 * HOUR + 5, {"policy": "name = 'y'\n"})
    led.add("nvidia", "re_exported", T0 + 5 * HOUR, {"consignee": "alibaba", "license": "BIS-1",
                                                      "destination": "CN"}, all3[:2])
    led.add("alibaba", "received", T0 + 6 * HOUR, {"site": "Hangzhou DC"}, all3[:2])
    led.add("authority", "customer_suspended", T0 + 7 * HOUR, {"id": "alibaba", "reason": "audit"})
    led.add("authority", "key_revoked", T0 + 7 * HOUR, {"key": _public("kerry"), "effective": T0,
                                                         "reason": "x"})
    return led


LEDGER = _build()
STEPS = [(i, st) for i, st in LEDGER.entries if st.kind in statement.STEPS]


def _participants(entries: list[tuple[int, Statement]]) -> dict[str, str]:
    return {statement.key_id(st.data["key"]): st.data["id"] for _, st in entries
            if st.kind == "participant_registered"}


PARTICIPANTS = _participants(LEDGER.entries)


def _document(entries: list[tuple[int, Statement]] | None = None) -> dict[str, Any]:
    entries = LEDGER.entries if entries is None else entries
    return epcis.epcis_document(entries, PARTICIPANTS.get, CREATED)


def _stream(entries: list[tuple[int, Statement]] | None = None) -> tuple[str, int]:
    out = io.StringIO()
    count = epcis.write_epcis(out, LEDGER.entries if entries is None else entries, PARTICIPANTS.get, CREATED)
    return out.getvalue(), count


# -- schema validation -------------------------------------------------------------------------------------

def test_document_validates_against_the_official_schema(epcis_validator: Any) -> None:
    assert schema_errors(epcis_validator, _document()) == []
    assert schema_errors(epcis_validator, json.loads(_stream()[0])) == []


def test_official_example_validates(epcis_validator: Any) -> None:
    example_path = SCHEMA_PATH.parent / "Example_9.6.1-ObjectEvent.jsonld"
    example = json.loads(example_path.read_text(encoding="utf-8"))
    assert schema_errors(epcis_validator, example) == []


def _event_of(document: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(e for e in document["epcisBody"]["eventList"] if e["custody:kind"] == kind)


def _probe_urn_bizstep(d: dict[str, Any]) -> None:
    _event_of(d, "shipped_to_us")["bizStep"] = "urn:epcglobal:cbv:bizstep:shipping"


def _probe_urn_disposition(d: dict[str, Any]) -> None:
    _event_of(d, "fabricated")["disposition"] = "urn:epcglobal:cbv:disp:active"


def _probe_offset_z(d: dict[str, Any]) -> None:
    _event_of(d, "received")["eventTimeZoneOffset"] = "Z"


def _probe_no_event_time(d: dict[str, Any]) -> None:
    del _event_of(d, "received")["eventTime"]


def _probe_bad_event_time(d: dict[str, Any]) -> None:
    _event_of(d, "received")["eventTime"] = "2026-01-01 06:00:00"


def _probe_transaction_without_list(d: dict[str, Any]) -> None:
    del _event_of(d, "duty_paid")["bizTransactionList"]


def _probe_bad_action(d: dict[str, Any]) -> None:
    _event_of(d, "inspected")["action"] = "MOVE"


def _probe_unprefixed_extension(d: dict[str, Any]) -> None:
    _event_of(d, "inspected")["statementHash"] = "00"


def _probe_bad_epc(d: dict[str, Any]) -> None:
    _event_of(d, "fabricated")["epcList"][0] = "H200 0001"


def _probe_bad_source_type(d: dict[str, Any]) -> None:
    _event_of(d, "re_exported")["sourceList"][0]["type"] = "urn:epcglobal:cbv:sdt:owning_party"


def _probe_no_context(d: dict[str, Any]) -> None:
    del d["@context"]


def _probe_schema_version(d: dict[str, Any]) -> None:
    d["schemaVersion"] = 2


PROBES = [_probe_urn_bizstep, _probe_urn_disposition, _probe_offset_z, _probe_no_event_time,
          _probe_bad_event_time, _probe_transaction_without_list, _probe_bad_action,
          _probe_unprefixed_extension, _probe_bad_epc, _probe_bad_source_type, _probe_no_context,
          _probe_schema_version]


def test_schema_rejects_every_probe(epcis_validator: Any) -> None:
    document = _document()
    assert schema_errors(epcis_validator, document) == []
    wrongly_passed = []
    for probe in PROBES:
        corrupted = copy.deepcopy(document)
        probe(corrupted)
        if not schema_errors(epcis_validator, corrupted):
            wrongly_passed.append(probe.__name__)
    assert wrongly_passed == []


def test_golden_vectors_export_validates(epcis_validator: Any) -> None:
    if not VECTORS.exists():
        pytest.skip(f"no vectors at {VECTORS}")
    vectors = json.loads(VECTORS.read_text(encoding="utf-8"))
    entries = [(v["index"], statement.decode(bytes.fromhex(v["wire_hex"]))) for v in vectors["statements"]]
    document = epcis.epcis_document(entries, _participants(entries).get, CREATED)
    assert schema_errors(epcis_validator, document) == []
    events = document["epcisBody"]["eventList"]
    assert [e["custody:kind"] for e in events] == list(statement.STEPS)
    assert all("custody:participant" in e for e in events)


# -- the mapping --------------------------------------------------------------------------------------------


def test_one_event_per_custody_statement_in_log_order() -> None:
    events = _document()["epcisBody"]["eventList"]
    assert [e["custody:logIndex"] for e in events] == [i for i, _ in STEPS]
    assert len(events) == 7
    for index, st in LEDGER.entries:
        assert (epcis.epcis_event(index, st, PARTICIPANTS.get) is None) == (st.kind in statement.ADMIN_KINDS)


EXPECTED = {  # log index → (type, action, bizStep, disposition)
    8: ("ObjectEvent", "ADD", "commissioning", "active"),
    9: ("ObjectEvent", "OBSERVE", "shipping", "in_transit"),
    10: ("ObjectEvent", "OBSERVE", "inspecting", "conformant"),
    11: ("ObjectEvent", "OBSERVE", "inspecting", "non_conformant"),
    12: ("TransactionEvent", "ADD", "https://custody.example/voc/bizstep/duty_collection", None),
    14: ("ObjectEvent", "OBSERVE", "departing", "in_transit"),
    15: ("ObjectEvent", "OBSERVE", "receiving", "in_progress"),
}


def test_event_types_bizsteps_and_dispositions() -> None:
    events = _document()["epcisBody"]["eventList"]
    got = {e["custody:logIndex"]: (e["type"], e["action"], e["bizStep"], e.get("disposition"))
           for e in events}
    assert got == EXPECTED


def test_document_head() -> None:
    document = _document()
    assert document["type"] == "EPCISDocument"
    assert document["schemaVersion"] == "2.0"
    assert document["creationDate"] == CREATED
    assert document["@context"] == [epcis.GS1_CONTEXT, {"custody": "https://custody.example/epcis/"}]


def test_extension_fields_match_the_statement() -> None:
    by_index = dict(LEDGER.entries)
    for event in _document()["epcisBody"]["eventList"]:
        st = by_index[event["custody:logIndex"]]
        assert event["custody:statementHash"] == st.hash.hex()
        assert event["eventID"] == "https://custody.example/id/statement/" + st.hash.hex()
        assert event["custody:signer"] == st.signer
        assert event["custody:signature"] == st.signature.hex()
        assert event["custody:kind"] == st.kind
        assert event["custody:origin"] == ORIGIN
        assert event["custody:participant"] == PARTICIPANTS[st.signer]
        assert event["custody:prev"] == [prev.hex() for _, prev in st.units]
        assert {k: event["custody:" + k] for k in st.data} == dict(st.data)
        assert event["epcList"] == [f"https://custody.example/id/unit/custody.example%2Fh200-cn/{s}"
                                    for s in st.serials]


def test_times_are_utc_with_z_and_zero_offset() -> None:
    by_index = dict(LEDGER.entries)
    for event in _document()["epcisBody"]["eventList"]:
        assert event["eventTimeZoneOffset"] == "+00:00"
        assert event["eventTime"].endswith("Z")
        parsed = datetime.fromisoformat(event["eventTime"].replace("Z", "+00:00"))
        at = by_index[event["custody:logIndex"]].at
        assert parsed == datetime.fromtimestamp(at // 1_000_000, UTC).replace(microsecond=at % 1_000_000)
    assert _event_of(_document(), "shipped_to_us")["eventTime"] == "2026-01-01T02:00:00.123456Z"
    assert _event_of(_document(), "fabricated")["eventTime"] == "2026-01-01T01:00:00Z"


def test_parties_locations_and_transactions() -> None:
    doc = _document()
    party = "https://custody.example/id/party/custody.example%2Fh200-cn/"
    location = "https://custody.example/id/location/custody.example%2Fh200-cn/"
    bt = "https://custody.example/id/bt/custody.example%2Fh200-cn/"
    fab = _event_of(doc, "fabricated")
    assert fab["readPoint"] == fab["bizLocation"] == {"id": location + "Fab%2018%2C%20Tainan"}
    shipped = _event_of(doc, "shipped_to_us")
    assert shipped["destinationList"] == [{"type": "location", "destination": location + "LAX"}]
    assert shipped["bizTransactionList"] == [{"type": "bol", "bizTransaction": bt + "waybill/AWB%201%2F2"}]
    inspected = _event_of(doc, "inspected")
    assert inspected["readPoint"] == {"id": location + "Lab%207%2C%20San%20Jos%C3%A9"}
    assert inspected["bizTransactionList"] == [{"type": "testres", "bizTransaction": bt + "report/R-1"}]
    duty = _event_of(doc, "duty_paid")
    assert duty["bizTransactionList"] == [{"type": "https://custody.example/voc/btt/customs_entry",
                                           "bizTransaction": bt + "customs_entry/ENT-0001"}]
    assert (duty["custody:entered_value"], duty["custody:duty"]) == (9_000_000, 2_250_000)
    exported = _event_of(doc, "re_exported")
    assert exported["sourceList"] == [{"type": "owning_party", "source": party + "nvidia"}]
    assert exported["destinationList"] == [{"type": "owning_party", "destination": party + "alibaba"}]
    assert (exported["custody:license"], exported["custody:destination"]) == ("BIS-1", "CN")
    received = _event_of(doc, "received")
    assert received["destinationList"] == [{"type": "owning_party", "destination": party + "alibaba"}]
    assert received["bizLocation"] == {"id": location + "Hangzhou%20DC"}


def test_unknown_participants_are_left_out() -> None:
    events = epcis.epcis_document(LEDGER.entries, lambda _: None, CREATED)["epcisBody"]["eventList"]
    assert all("custody:participant" not in e for e in events)
    exported = next(e for e in events if e["custody:kind"] == "re_exported")
    assert "sourceList" not in exported
    assert exported["destinationList"][0]["destination"].endswith("/alibaba")
    assert "destinationList" not in next(e for e in events if e["custody:kind"] == "received")


def test_an_event_alone_rebuilds_the_signed_statement() -> None:
    for event in _document()["epcisBody"]["eventList"]:
        at = datetime.fromisoformat(event["eventTime"].replace("Z", "+00:00"))
        micros = int(at.timestamp()) * 1_000_000 + at.microsecond
        serials = [uri.rsplit("/", 1)[1] for uri in event["epcList"]]
        data = {k.removeprefix("custody:"): v for k, v in event.items()
                if k.startswith("custody:") and k.removeprefix("custody:") not in (
                    "statementHash", "logIndex", "kind", "origin", "signer", "participant", "signature",
                    "prev")}
        body = canonical.pack({"v": 1, "origin": event["custody:origin"], "kind": event["custody:kind"],
                               "at": micros, "signer": event["custody:signer"],
                               "units": [[s, bytes.fromhex(p)] for s, p in zip(serials, event["custody:prev"],
                                                                               strict=True)],
                               "data": data})
        assert statement.statement_hash(body).hex() == event["custody:statementHash"]
        public = bytes(KEYS[event["custody:participant"]].verify_key)
        VerifyKey(public).verify(statement.signed_message(body), bytes.fromhex(event["custody:signature"]))


def test_chains_link_through_prev_and_statement_hash() -> None:
    events = _document()["epcisBody"]["eventList"]
    head: dict[str, str] = {}
    for event in events:
        for uri, prev in zip(event["epcList"], event["custody:prev"], strict=True):
            assert prev == head.get(uri, "00" * 32)
            head[uri] = event["custody:statementHash"]


# -- streaming ----------------------------------------------------------------------------------------------


def test_stream_equals_document() -> None:
    text, count = _stream()
    assert count == 7
    assert json.loads(text) == _document()
    assert text.isascii()
    assert text == _stream()[0]  # deterministic


def test_stream_writes_each_event_before_reading_the_next_entry() -> None:
    out = io.StringIO()
    written: list[int] = []

    def entries() -> Iterator[tuple[int, Statement]]:
        for index, st in LEDGER.entries:
            written.append(out.getvalue().count('"custody:logIndex"'))
            yield index, st

    count = epcis.write_epcis(out, entries(), PARTICIPANTS.get, CREATED)
    steps_before = [sum(1 for i, _ in STEPS if i < index) for index, _ in LEDGER.entries]
    assert written == steps_before
    assert count == 7


def test_no_events() -> None:
    admin = [(i, st) for i, st in LEDGER.entries if st.kind in statement.ADMIN_KINDS]
    text, count = _stream(admin)
    assert count == 0
    assert json.loads(text) == _document(admin)
    assert json.loads(text)["epcisBody"] == {"eventList": []}


def test_bad_creation_date_is_refused() -> None:
    with pytest.raises(BadInput):
        epcis.write_epcis(io.StringIO(), [], PARTICIPANTS.get, "yesterday")
    with pytest.raises(BadInput):
        epcis.epcis_document([], PARTICIPANTS.get, "2026-01-01T00:00:00")


def test_time_without_rfc3339_form_names_the_index() -> None:
    led = _Ledger()
    led.add("uslab", "received", 2**63, {"site": "x"}, ("S-1",))
    with pytest.raises(TimeInvalid) as caught:
        epcis.epcis_event(41, led.entries[0][1], PARTICIPANTS.get)
    assert caught.value.index == 41


def test_format_time() -> None:
    assert epcis.format_time(0) == "1970-01-01T00:00:00Z"
    assert epcis.format_time(T0 + 1) == "2026-01-01T00:00:00.000001Z"
    assert epcis.format_time(T0 + 500_000) == "2026-01-01T00:00:00.5Z"
    assert epcis.format_time(253_402_300_799_999_999) == "9999-12-31T23:59:59.999999Z"
