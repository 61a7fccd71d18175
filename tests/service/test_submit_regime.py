"""Issue 17 over HTTP: `declare us-volume --ledger URL`; the pre-check (`findings=refuse`) applies to
custody steps only, so a declaration that adds a finding is recorded; the new steps go through it."""

from __future__ import annotations

import json

from tests.conftest import Ledger as Book
from tests.service.conftest import Served
from tests.service.test_submit import SIX, remote


def test_declarations_and_the_new_steps_over_http(served: Served, book: Book) -> None:
    for step, signer, options in SIX[:5]:
        result = remote(served.url, "record", step, "--key", book.key(signer), "--serial", "H1", "--serial", "H2",
                        *options, "--at", "2021-03-10")
        assert result.exit_code == 0, (step, result.stderr)
    # two units re-exported to China in March 2021 against one U.S. unit: the limit is 0
    declared = remote(served.url, "declare", "us-volume", "--model", "H200-SXM5-141GB", "--from", "2021-03-01",
                      "--until", "2021-03-31", "--units", "1", "--key", book.key("nvidia"))
    assert declared.exit_code == 0, declared.stderr  # recorded, whatever it adds
    index = int(declared.stdout.split("at index ")[1].split()[0])
    report = json.loads(remote(served.url, "report", "compliance", "--json").stdout)
    assert {"code": "VOLUME_RATIO_EXCEEDED", "serial": None, "index": index} in [
        {k: f[k] for k in ("code", "serial", "index")} for f in report["findings"]]
    volume = json.loads(remote(served.url, "report", "volume", "--json").stdout)
    assert [(p["exported"], p["limit"], p["over"]) for p in volume["periods"]] == [(2, 0, 2)]
    # a location from the wrong country is refused by the service's pre-check, like record's
    received = remote(served.url, "record", "received", "--key", book.key("alibaba"), "--serial", "H1",
                      "--site", "Hangzhou")
    assert received.exit_code == 0, received.stderr
    wrong = remote(served.url, "record", "located", "--key", book.key("alibaba"), "--serial", "H1", "--site", "J",
                   "--country", "MY", "--method", "on-site-audit")
    assert wrong.exit_code == 1 and "LOCATION_MISMATCH" in wrong.stderr
    scrapped = remote(served.url, "record", "destroyed", "--key", book.key("nvidia"), "--serial", "H2",
                      "--method", "shredded", "--site", "S", "--certificate", "C")
    assert scrapped.exit_code == 0, scrapped.stderr
    history = json.loads(remote(served.url, "history", "H2", "--json").stdout)
    assert history["steps"][-1]["kind"] == "destroyed"
