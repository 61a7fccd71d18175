"""Custody steps as GS1 EPCIS 2.0 JSON-LD events, so supply-chain tools can read the ledger.

`custody export-epcis` writes one `EPCISDocument` (EPCIS 2.0 §"JSON/JSON-LD bindings", `schemaVersion`
"2.0") whose `epcisBody.eventList` holds one event per custody step, in log order; it validates against
GS1's `EPCIS-JSON-Schema.json`. Administrative statements (`ledger_opened`, `participant_registered`,
`key_revoked`, `customer_approved`, `customer_suspended`, `policy_issued`) are not events. The export is a
view: the signed statements stay the evidence, and every event names the statement it came from.

Mapping (CBV 2.0 bare words where the CBV has a fitting value, project URIs where it has none):

| kind            | event            | action  | bizStep                   | disposition                     |
|-----------------|------------------|---------|---------------------------|---------------------------------|
| `fabricated`    | ObjectEvent      | ADD     | `commissioning`           | `active`                        |
| `shipped_to_us` | ObjectEvent      | OBSERVE | `shipping`                | `in_transit`                    |
| `inspected`     | ObjectEvent      | OBSERVE | `inspecting`              | `conformant` / `non_conformant` |
| `duty_paid`     | TransactionEvent | ADD     | `BIZSTEP_DUTY_COLLECTION` | (none)                          |
| `re_exported`   | ObjectEvent      | OBSERVE | `departing`               | `in_transit`                    |
| `received`      | ObjectEvent      | OBSERVE | `receiving`               | `in_progress`                   |
| `located`       | ObjectEvent      | OBSERVE | `cycle_counting`          | `in_progress`                   |
| `destroyed`     | ObjectEvent      | DELETE  | `destroying`              | `destroyed`                     |
| `withdrawn`     | ObjectEvent      | OBSERVE | `void_shipping`           | `returned`                      |

(`inspected`: `conformant` when `result` is `pass`, `non_conformant` when it is `fail`. `located` is a
periodic count of what is where, the unit still in use as after `received`; `destroyed` ends the EPC's
life, hence DELETE; `withdrawn` declares that the unit will not be shipped on as the export flow said,
and goes back (to the U.S. market, or to its maker).) Other slots:

| kind            | other EPCIS slots                                                                    |
|-----------------|--------------------------------------------------------------------------------------|
| `fabricated`    | readPoint, bizLocation: `site`                                                       |
| `shipped_to_us` | destinationList `location`: `port_of_entry`; bizTransactionList `bol`: `waybill`     |
| `inspected`     | readPoint, bizLocation: `site`; bizTransactionList `testres`: `report`               |
| `duty_paid`     | bizTransactionList `BTT_CUSTOMS_ENTRY`: `entry`                                      |
| `re_exported`   | sourceList `owning_party`: the exporter; destinationList `owning_party`: `consignee` |
| `received`      | readPoint, bizLocation: `site`; destinationList `owning_party`: the customer         |
| `located`       | readPoint, bizLocation: `site`                                                       |
| `destroyed`     | readPoint, bizLocation: `site`; bizTransactionList `cert`: `certificate`             |
| `withdrawn`     | sourceList `owning_party`: the exporter                                              |

Declarations (`us_volume_reported`) are not events either: they describe a period, not units.

Every event has `epcList` = the statement's serials in `units` order; `eventTime` = `at` as RFC 3339 UTC
(`…Z`, fractional seconds only when non-zero, no trailing zeros); `eventTimeZoneOffset` "+00:00"; and
`eventID` = `STATEMENT_NS` + the statement hash in hex. (Not `ni:///sha-256;…?ver=CBV2.0`: that form
promises CBV's canonical event hash, which a consumer could recompute and find different.) "The exporter"
and "the customer" are the participants owning the signer's key; where that is unknown the party is left
out.

Extension fields, in the `custody` prefix (`EXT_NS`) declared in `@context`, tie each event to its signed
statement: `custody:statementHash` (hex), `custody:logIndex`, `custody:kind`, `custody:origin`,
`custody:signer` (key id), `custody:participant` (when known), `custody:signature` (hex) and
`custody:prev` (each unit's `prev` hash in hex, in `epcList` order). Every `data` field also appears as
stored under its own name (`custody:model`, `custody:lot`, `custody:port_of_entry`, `custody:waybill`,
`custody:result`, `custody:country`, `custody:report`, `custody:entry`, `custody:entered_value`,
`custody:duty`, `custody:hts`, `custody:importer`, `custody:origin_country`, `custody:consignee`,
`custody:license`, `custody:destination`, `custody:site`, `custody:method`, `custody:certificate`,
`custody:reason`), the ones that also fill an EPCIS slot included. So the canonical body, and from it the
hash and the Ed25519 signature, can be rebuilt and checked from one event alone.

Identifiers are minted in the project's namespace, scoped by the ledger's origin, each path segment
percent-encoded (RFC 3986 unreserved characters kept), e.g. for origin `custody.example/h200-cn`:
`https://custody.example/id/unit/custody.example%2Fh200-cn/H200-0001` (unit),
`…/id/party/<origin>/<participant id>`, `…/id/location/<origin>/<site or port>`,
`…/id/bt/<origin>/<customs_entry|waybill|report|certificate>/<value>` (business transactions).

The output is deterministic: the same statements and `created` give the same bytes (ASCII only).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TextIO
from urllib.parse import quote

from ledger import values
from ledger.errors import BadInput, TimeInvalid
from ledger.statement import Statement

GS1_CONTEXT = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"  # EPCIS 2.0 §"JSON-LD context"
SCHEMA_VERSION = "2.0"
TIME_ZONE_OFFSET = "+00:00"  # every time is UTC

EXT_PREFIX = "custody"
EXT_NS = "https://custody.example/epcis/"  # extension fields: `custody:statementHash`, …
ID_NS = "https://custody.example/id/"
UNIT_NS = ID_NS + "unit/"  # + origin / serial
PARTY_NS = ID_NS + "party/"  # + origin / participant id
LOCATION_NS = ID_NS + "location/"  # + origin / site or port of entry
TRANSACTION_NS = ID_NS + "bt/"  # + origin / type / value
STATEMENT_NS = ID_NS + "statement/"  # + statement hash (hex): the eventID
VOC_NS = "https://custody.example/voc/"
BIZSTEP_DUTY_COLLECTION = VOC_NS + "bizstep/duty_collection"  # no CBV 2.0 bizStep for collecting a duty
BTT_CUSTOMS_ENTRY = VOC_NS + "btt/customs_entry"  # no CBV 2.0 BTT for a customs entry (e.g. CBP Form 7501)
BTT_WAYBILL = "bol"  # CBV 2.0 BTT: bill of lading (an air waybill is one)
BTT_REPORT = "testres"  # CBV 2.0 BTT: test results
BTT_CERTIFICATE = "cert"  # CBV 2.0 BTT: a certificate (here, of destruction)

# kind → (event type, action, bizStep, disposition or None); `inspected`'s disposition follows `result`.
_STEPS: dict[str, tuple[str, str, str, str | None]] = {
    "fabricated": ("ObjectEvent", "ADD", "commissioning", "active"),
    "shipped_to_us": ("ObjectEvent", "OBSERVE", "shipping", "in_transit"),
    "inspected": ("ObjectEvent", "OBSERVE", "inspecting", "conformant"),
    "duty_paid": ("TransactionEvent", "ADD", BIZSTEP_DUTY_COLLECTION, None),
    "re_exported": ("ObjectEvent", "OBSERVE", "departing", "in_transit"),
    "received": ("ObjectEvent", "OBSERVE", "receiving", "in_progress"),
    "located": ("ObjectEvent", "OBSERVE", "cycle_counting", "in_progress"),
    "destroyed": ("ObjectEvent", "DELETE", "destroying", "destroyed"),
    "withdrawn": ("ObjectEvent", "OBSERVE", "void_shipping", "returned"),
}
_INSPECTION_DISPOSITION = {"pass": "conformant", "fail": "non_conformant"}

_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)")

ParticipantOf = Callable[[str], str | None]


def format_time(micros: int) -> str:
    """`values.format_time`, refusing (`TimeInvalid`) what it would write with an expanded year (past
    9999): RFC 3339 and the EPCIS schema have none."""
    text = values.format_time(micros)
    if text.startswith("+"):
        raise TimeInvalid(f"time {micros} µs has no RFC 3339 form")
    return text


def _segment(text: str) -> str:
    return quote(text, safe="")


def unit_uri(origin: str, serial: str) -> str:
    """The EPC URI of a unit of the ledger `origin`."""
    return f"{UNIT_NS}{_segment(origin)}/{_segment(serial)}"


def party_uri(origin: str, participant: str) -> str:
    """The party URI of a participant of the ledger `origin`."""
    return f"{PARTY_NS}{_segment(origin)}/{_segment(participant)}"


def location_uri(origin: str, place: str) -> str:
    """The location URI of a site or port named in the ledger `origin`."""
    return f"{LOCATION_NS}{_segment(origin)}/{_segment(place)}"


def transaction_uri(origin: str, kind: str, value: str) -> str:
    """The business-transaction URI of a customs entry, waybill or report named in the ledger `origin`."""
    return f"{TRANSACTION_NS}{_segment(origin)}/{_segment(kind)}/{_segment(value)}"


def statement_uri(statement: Statement) -> str:
    """The eventID of a step's event: the statement hash, which already commits to the origin."""
    return STATEMENT_NS + statement.hash.hex()


def _json_value(value: Any) -> Any:
    """A `data` value as DESIGN.md's JSON shows it: integers stay integers, bytes become hex."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _json_value(value[key]) for key in sorted(value)}
    return value


def _ext(name: str) -> str:
    return f"{EXT_PREFIX}:{name}"


def epcis_event(index: int, statement: Statement, participant_of: ParticipantOf) -> dict[str, Any] | None:
    """The EPCIS event of the custody step at log `index`, or None for a statement without units
    (administrative, or a declaration).

    `participant_of` maps a signer key id to its participant id (None if unknown).
    """
    step = _STEPS.get(statement.kind)
    if step is None:
        return None
    event_type, action, biz_step, disposition = step
    origin, data = statement.origin, statement.data
    try:
        event_time = format_time(statement.at)
    except TimeInvalid as e:
        raise e.at_index(index) from None
    participant = participant_of(statement.signer)

    event: dict[str, Any] = {
        "type": event_type,
        "eventID": statement_uri(statement),
        "eventTime": event_time,
        "eventTimeZoneOffset": TIME_ZONE_OFFSET,
        "epcList": [unit_uri(origin, serial) for serial in statement.serials],
        "action": action,
        "bizStep": biz_step,
    }
    if statement.kind == "inspected":
        disposition = _INSPECTION_DISPOSITION[data["result"]]
    if disposition is not None:
        event["disposition"] = disposition
    if "site" in data:
        site = location_uri(origin, data["site"])
        event["readPoint"] = {"id": site}
        event["bizLocation"] = {"id": site}

    transactions: list[dict[str, str]] = []
    sources: list[dict[str, str]] = []
    destinations: list[dict[str, str]] = []
    if statement.kind == "shipped_to_us":
        transactions.append({"type": BTT_WAYBILL,
                             "bizTransaction": transaction_uri(origin, "waybill", data["waybill"])})
        destinations.append({"type": "location",
                             "destination": location_uri(origin, data["port_of_entry"])})
    elif statement.kind == "inspected":
        transactions.append({"type": BTT_REPORT,
                             "bizTransaction": transaction_uri(origin, "report", data["report"])})
    elif statement.kind == "duty_paid":
        transactions.append({"type": BTT_CUSTOMS_ENTRY,
                             "bizTransaction": transaction_uri(origin, "customs_entry", data["entry"])})
    elif statement.kind == "re_exported":
        if participant is not None:
            sources.append({"type": "owning_party", "source": party_uri(origin, participant)})
        destinations.append({"type": "owning_party", "destination": party_uri(origin, data["consignee"])})
    elif statement.kind == "received" and participant is not None:
        destinations.append({"type": "owning_party", "destination": party_uri(origin, participant)})
    elif statement.kind == "destroyed":
        transactions.append({"type": BTT_CERTIFICATE,
                             "bizTransaction": transaction_uri(origin, "certificate", data["certificate"])})
    elif statement.kind == "withdrawn" and participant is not None:
        sources.append({"type": "owning_party", "source": party_uri(origin, participant)})
    if transactions:
        event["bizTransactionList"] = transactions
    if sources:
        event["sourceList"] = sources
    if destinations:
        event["destinationList"] = destinations

    event[_ext("statementHash")] = statement.hash.hex()
    event[_ext("logIndex")] = index
    event[_ext("kind")] = statement.kind
    event[_ext("origin")] = origin
    event[_ext("signer")] = statement.signer
    if participant is not None:
        event[_ext("participant")] = participant
    event[_ext("signature")] = statement.signature.hex()
    event[_ext("prev")] = [prev.hex() for _, prev in statement.units]
    for name in sorted(data):
        event[_ext(name)] = _json_value(data[name])
    return event


def _head(created: str) -> dict[str, Any]:
    if not isinstance(created, str) or _RFC3339.fullmatch(created) is None:
        raise BadInput(f"creationDate {created!r:.40} is not an RFC 3339 time")
    return {
        "@context": [GS1_CONTEXT, {EXT_PREFIX: EXT_NS}],
        "type": "EPCISDocument",
        "schemaVersion": SCHEMA_VERSION,
        "creationDate": created,
    }


def _events(entries: Iterable[tuple[int, Statement]],
            participant_of: ParticipantOf) -> Iterable[dict[str, Any]]:
    for index, statement in entries:
        event = epcis_event(index, statement, participant_of)
        if event is not None:
            yield event


def epcis_document(entries: Iterable[tuple[int, Statement]], participant_of: ParticipantOf,
                   created: str) -> dict[str, Any]:
    """The whole EPCIS document in memory, for small inputs; `write_epcis` streams the same JSON."""
    document = _head(created)
    document["epcisBody"] = {"eventList": list(_events(entries, participant_of))}
    return document


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=True, allow_nan=False)


def write_epcis(out: TextIO, entries: Iterable[tuple[int, Statement]], participant_of: ParticipantOf,
                created: str) -> int:
    """Stream the EPCIS document of `entries` (log index, statement) to `out`; returns the event count.

    Writes the head, then each event as it is made, one per line, then the tail: memory does not grow
    with the number of events. `created` (RFC 3339) is the document's `creationDate`.
    """
    head = _dumps(_head(created))
    out.write(head[:-1] + ', "epcisBody": {"eventList": [')
    count = 0
    for event in _events(entries, participant_of):
        out.write(",\n" if count else "\n")
        out.write(_dumps(event))
        count += 1
    out.write("\n]}}\n")
    return count
