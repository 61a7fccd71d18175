"""Following a served log by C2SP tlog-tiles: `verify --ledger URL`, and `report html --ledger URL`'s log.

The client reads the served checkpoint, then every entry bundle up to its size (each wire form after its
big-endian uint16 length, exactly as many as the bundle's width) and verifies those statements as it
verifies a bundle: every hard rule, then the checkpoint (the operator's signature, the root of the log at
its size) and, if asked, `--checkpoint` files and witnesses' cosignatures. Every hash tile the checkpoint
determines is fetched too and must be the tile of the entries' own tree: a service that serves one tree
to tile readers and other entries to entry readers is caught either way.
"""

from __future__ import annotations

from collections.abc import Iterator

from ledger import checkpoint as notes
from ledger import parallel
from ledger import verify as verification
from ledger.errors import EncodingInvalid, LedgerError, NotFound, StoreError
from ledger.service.client import LedgerClient
from ledger.service.tiles import TILE_WIDTH, TiledLog, tile_path, width_at


def _entries(client: LedgerClient, size: int) -> Iterator[tuple[int, list[bytes], None]]:
    """The served log's wire forms [0, size) in chunks, from its entry bundles."""
    start = 0
    wires: list[bytes] = []
    for n in range((size + TILE_WIDTH - 1) // TILE_WIDTH):
        width = min(TILE_WIDTH, size - n * TILE_WIDTH)
        data = client.tile(tile_path(None, n, width))
        first = n * TILE_WIDTH
        offset, found = 0, 0
        while offset < len(data):
            if offset + 2 > len(data):
                raise EncodingInvalid(f"served entry bundle {n} is cut inside a length", first + found)
            length = int.from_bytes(data[offset:offset + 2], "big")
            if offset + 2 + length > len(data):
                raise EncodingInvalid(f"served entry bundle {n} is cut inside entry {first + found}",
                                      first + found)
            wires.append(data[offset + 2:offset + 2 + length])
            offset += 2 + length
            found += 1
        if found != width:
            raise EncodingInvalid(f"served entry bundle {n} holds {found} entries, not {width}", first + found)
        if len(wires) >= parallel.CHUNK_STATEMENTS:
            yield start, wires, None
            start += len(wires)
            wires = []
    if wires:
        yield start, wires, None


def _check_tiles(client: LedgerClient, size: int, verifier: verification.Verifier) -> None:
    """Every hash tile of the tree of `size` must be the entries' own (a failure names the first that is not)."""
    if verifier.size != size:
        return  # the entries already failed; their tree is not the served one
    ours = TiledLog()
    ours.append_leaves(bytes(verifier.leaves.data))
    level = 0
    while TILE_WIDTH ** level <= size:
        count = size // TILE_WIDTH ** level  # the hashes of this level that the tree of `size` determines
        tiles = [(n, TILE_WIDTH) for n in range(count // TILE_WIDTH)]
        if width_at(level, size):
            tiles.append((count // TILE_WIDTH, width_at(level, size)))
        for n, width in tiles:
            path = tile_path(level, n, width)
            try:
                served = client.tile(path)
            except NotFound as e:
                verifier.fail(verification.Failure("checkpoint_root", None, f"served tile {path} is missing: "
                                                   f"{e.detail}"))
                return
            if served != ours.tile(level, n, width):
                verifier.fail(verification.Failure(
                    "checkpoint_root", n * TILE_WIDTH * TILE_WIDTH ** level,
                    f"served hash tile {path} is not the tree of the served entries"))
                return
        level += 1


def verify_served(client: LedgerClient, options: verification.Options) -> verification.Report:
    """Verify the log a service serves, through its tiles, against its served checkpoint."""
    note = client.checkpoint()
    if note is None:
        raise NotFound(f"the ledger service at {client.url} holds no ledger yet: nothing to verify")
    return verify_log(client, note, None, options)


def verify_log(client: LedgerClient, note: str, size: int | None, options: verification.Options) \
        -> verification.Report:
    """Verify the served log's first `size` statements (default: the checkpoint's size), through its tiles,
    against the checkpoint `note` the service served. A `size` beyond the checkpoint's (the log grew since
    it was signed; every tile of a log size the service holds is served) is verified as a database is:
    the checkpoint against its own prefix, and a warning that no checkpoint covers the rest."""
    try:
        parsed = notes.parse_note(note)
    except LedgerError as e:
        raise StoreError(f"the ledger service at {client.url} serves something that is not a checkpoint: "
                         f"{e.detail}") from e
    origin = parsed.checkpoint.origin
    count = parsed.checkpoint.size if size is None else size
    return verification.verify_wires(origin, _entries(client, count), lambda: [note], options, where="served",
                                     count=count, after=lambda v: _check_tiles(client, count, v))
