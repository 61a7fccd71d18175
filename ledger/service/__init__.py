"""The ledger service (`custody serve`): participants submit over HTTP; followers read C2SP tlog-tiles."""
