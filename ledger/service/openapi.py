"""The service's OpenAPI 3.1 document (`GET /openapi.json`), written by hand to say what the routes do.

Tests check that every route of the app is here and property-test the routes from this document
(schemathesis), so it cannot drift from the server.
"""

from __future__ import annotations

from typing import Any

CHECKS = ["encoding", "origin", "genesis_trust", "signature", "signer", "role", "revocation", "chain", "time",
          "log_index", "unit_links", "checkpoint_signature", "checkpoint_root", "checkpoint_consistency",
          "cosignature", "compliance", "usage", "unavailable"]

_HEX32 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_TIME = {"type": "string", "description": "RFC 3339 UTC, ending in Z"}
_SERIAL = {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}


def _error(description: str, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"$ref": "#/components/schemas/Error"}
    if extra:
        schema = {"allOf": [schema, {"type": "object", "properties": extra}]}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_COMMON = {
    "400": _error("usage: a bad query"),
    "405": _error("usage: wrong method"),
    "503": _error("unavailable: the store is unavailable or the service is full (Retry-After)"),
}

_FINDING = {"type": "object", "required": ["code", "serial", "index", "detail"],
            "properties": {"code": {"type": "string"}, "serial": {"type": ["string", "null"]},
                           "index": {"type": "integer"}, "detail": {"type": "string"}}}


def _get(summary: str, ok: dict[str, Any], parameters: list[dict[str, Any]] | None = None,
         **responses: dict[str, Any]) -> dict[str, Any]:
    return {"get": {"summary": summary, "parameters": parameters or [],
                    "responses": {"200": ok, **_COMMON, **responses}}}


def _path(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}


def _query(name: str, schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


def _bytes(description: str, media: str = "application/octet-stream") -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": {"type": "string", "format": "binary"}}},
            "headers": {"Cache-Control": {"schema": {"type": "string"}}}}


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route."""
    tile_n = {"type": "string", "description": "c2sp.org/tlog-tiles <N>: 3-digit groups, all but the last "
              "prefixed x (x001/x234/067); a partial tile ends .p/<W>"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "custody ledger service", "version": "1",
                 "description": "Submit signed statements; follow the log by C2SP tlog-tiles."},
        "paths": {
            "/v1/statements": {"post": {
                "summary": "Submit one signed statement (its wire form)",
                "parameters": [_query("findings", {"type": "string", "enum": ["refuse", "allow"]},
                                      "refuse (default): a custody step that would add findings is refused")],
                "requestBody": {"required": True, "content": {
                    "application/vnd.custody.statement": {"schema": {"type": "string", "format": "binary"}}}},
                "responses": {
                    "200": _json("logged, and covered by a signed checkpoint", {
                        "type": "object", "required": ["index", "hash", "checkpoint", "inclusion", "receipt"],
                        "properties": {"index": {"type": "integer", "minimum": 0}, "hash": _HEX32,
                                       "checkpoint": {"type": "string"},
                                       "inclusion": {"type": "array", "items": _HEX32},
                                       "receipt": {"type": "string",
                                                   "description": "c2sp.org/tlog-proof@v1"}}}),
                    "400": _error("encoding, or usage (query, Content-Type)"),
                    "405": _COMMON["405"],
                    "408": _error("usage: the body was too slow"),
                    "409": _error("chain: a unit moved on; re-read the heads and sign again",
                                  heads={"type": "object", "additionalProperties": {"type": ["string", "null"]}}),
                    "413": _error("encoding: over 65,535 bytes"),
                    "422": _error("a hard rule (its check), or compliance with findings",
                                  findings={"type": "array", "items": _FINDING}),
                    "503": _COMMON["503"],
                }}},
            "/v1/heads": {"post": {
                "summary": "The units' chain heads and latest times",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["serials"], "additionalProperties": False,
                    "properties": {"serials": {"type": "array", "maxItems": 10000, "items": _SERIAL}}}}}},
                "responses": {
                    "200": _json("heads", {
                        "type": "object", "required": ["log_size", "heads", "at"],
                        "properties": {"log_size": {"type": "integer", "minimum": 0},
                                       "heads": {"type": "object",
                                                 "additionalProperties": {"type": ["string", "null"]}},
                                       "at": {"type": "object",
                                              "additionalProperties": {"type": ["string", "null"]}}}}),
                    "408": _error("usage: the body was too slow"),
                    "413": _error("usage: the body is over 1 MiB"),
                    **_COMMON}}},
            "/v1/cosignatures": {"post": {
                "summary": "Witnesses' tlog-cosignature/v1 lines on a checkpoint the service signed",
                "requestBody": {"required": True, "content": {"text/plain": {"schema": {
                    "type": "string", "description": "a C2SP signed note: the checkpoint with cosignature lines"}}}},
                "responses": {
                    "200": _json("the valid cosignatures by configured witnesses (--witness) were stored", {
                        "type": "object", "required": ["stored"],
                        "properties": {"stored": {"type": "integer", "minimum": 1}}}),
                    "408": _error("usage: the body was too slow"),
                    "413": _error("usage: the body is over 64 KiB"),
                    "422": _error("cosignature: no valid cosignature by a configured witness on a checkpoint "
                                  "the service signed"),
                    "405": _COMMON["405"],
                    "503": _COMMON["503"]}}},
            "/v1/units/{serial}": _get(
                "One unit's history (as `history --json`)",
                _json("the unit's steps and findings", {
                    "type": "object", "required": ["serial", "steps", "findings"],
                    "properties": {"serial": {"type": "string"}, "steps": {"type": "array", "items": {
                        "type": "object", "required": ["index", "kind", "at", "signer", "participant", "hash",
                                                       "data"]}},
                        "findings": {"type": "array", "items": _FINDING}}}),
                [_path("serial", {"type": "string"}), _query("at", _TIME, "the unit as it stood then")],
                **{"404": _error("usage: unknown serial")}),
            "/v1/units/{serial}/proof": _get(
                "A custody-proof/1 of one unit against the latest checkpoint",
                _json("the proof file", {"type": "object", "required": ["format", "origin", "serial",
                                                                        "signed_checkpoint", "statements"]}),
                [_path("serial", {"type": "string"})], **{"404": _error("usage: unknown serial")}),
            "/v1/reports/{name}": _get(
                "A report (as `report NAME --json`)",
                _json("the report", {"type": "object", "required": ["as_of", "log_size"]}),
                [_path("name", {"type": "string"}), _query("until", _TIME, "report as of this time")],
                **{"404": _error("usage: unknown report, or the log is empty")}),
            "/": _get(
                "The visual report (as `report html`), live",
                {"description": "one self-contained HTML page",
                 "content": {"text/html; charset=utf-8": {"schema": {"type": "string"}}},
                 "headers": {"Cache-Control": {"schema": {"type": "string"}}}},
                [_query("until", _TIME, "report as of this time")],
                **{"404": _error("usage: the log is empty")}),
            "/v1/proofs/consistency": _get(
                "An RFC 9162 consistency proof between two tree sizes",
                _json("the proof, leaf hashes upward, lowercase hex",
                      {"type": "object", "required": ["proof"],
                       "properties": {"proof": {"type": "array", "items": _HEX32}}}),
                [_query("from", {"type": "integer", "minimum": 1}, "the older size", True),
                 _query("to", {"type": "integer", "minimum": 1}, "the newer size", True)],
                **{"404": _error("usage: beyond the log")}),
            "/checkpoint": _get(
                "The latest checkpoint (C2SP signed note) with its stored cosignatures",
                _bytes("the note", "text/plain; charset=utf-8"), None, **{"404": _error("usage: the log is empty")}),
            "/tile/{level}/{index}": _get(
                "A C2SP tlog-tiles hash tile", _bytes("256 hashes (8,192 bytes), or W of a partial tile"),
                [_path("level", {"type": "integer", "minimum": 0, "maximum": 63}), _path("index", tile_n)],
                **{"404": _error("usage: not a tile, or not determined by the log yet")}),
            "/tile/entries/{index}": _get(
                "A C2SP tlog-tiles entry bundle: each wire form after its big-endian uint16 length",
                _bytes("the entry bundle"), [_path("index", tile_n)],
                **{"404": _error("usage: not a bundle, or not determined by the log yet")}),
            "/openapi.json": _get("This document", _json("OpenAPI 3.1", {"type": "object"}), None),
        },
        "components": {"schemas": {"Error": {
            "type": "object", "required": ["error", "detail"],
            "properties": {"error": {"type": "string", "enum": CHECKS}, "detail": {"type": "string"}}}}},
    }
