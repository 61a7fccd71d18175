// custody report html: filters and pages the long tables and draws one unit's timeline from the data
// embedded in the page (script#report-data). Loads nothing; writes only text (textContent), never markup.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var ROWS = data.pageRows;

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        if (k === "text") { node.textContent = attrs[k]; } else { node.setAttribute(k, attrs[k]); }
      });
    }
    (children || []).forEach(function (c) { node.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return node;
  }
  function fmt(n) { return n.toLocaleString("en-US"); }
  function serialButton(serial) {
    return el("button", { type: "button", "class": "serial", "data-serial": serial,
      "aria-label": "Show the timeline of unit " + serial, text: serial });
  }

  // --- a paged, filtered table ----------------------------------------------------------------------
  function Paged(opts) {
    this.rows = opts.rows; this.match = opts.match; this.cells = opts.cells; this.describe = opts.describe;
    this.body = document.querySelector(opts.table + " tbody");
    this.status = document.getElementById(opts.status);
    this.pager = document.getElementById(opts.pager);
    this.page = 0; this.shown = this.rows;
    var self = this;
    if (this.pager) {
      this.pager.addEventListener("click", function (e) {
        var move = e.target && e.target.getAttribute("data-move");
        if (!move) { return; }
        self.page += Number(move); self.draw();
      });
    }
  }
  Paged.prototype.filter = function () {
    var match = this.match();
    this.shown = match ? this.rows.filter(match) : this.rows;
    this.page = 0; this.draw();
  };
  Paged.prototype.draw = function () {
    var pages = Math.max(1, Math.ceil(this.shown.length / ROWS));
    this.page = Math.min(Math.max(this.page, 0), pages - 1);
    var start = this.page * ROWS, stop = Math.min(start + ROWS, this.shown.length);
    var frag = document.createDocumentFragment();
    for (var i = start; i < stop; i++) {
      var tr = document.createElement("tr");
      this.cells(this.shown[i]).forEach(function (c) { tr.appendChild(c); });
      frag.appendChild(tr);
    }
    this.body.replaceChildren(frag);
    var what = this.describe();
    this.status.textContent = this.shown.length
      ? "Showing " + fmt(start + 1) + "–" + fmt(stop) + " of " + fmt(this.shown.length) + what
        + (pages > 1 ? " (page " + fmt(this.page + 1) + " of " + fmt(pages) + ")" : "")
      : "None" + what + ".";
    if (this.pager) {
      var buttons = this.pager.querySelectorAll("button");
      buttons[0].disabled = this.page === 0;
      buttons[1].disabled = this.page >= pages - 1;
      this.pager.hidden = pages < 2;
    }
  };

  // --- findings -------------------------------------------------------------------------------------
  var codeSelect = document.getElementById("f-code");
  var serialInput = document.getElementById("f-serial");
  var findings = new Paged({
    rows: data.findings, table: "#findings-table", status: "f-status", pager: "f-pager",
    match: function () {
      var code = codeSelect.value, text = serialInput.value.trim().toLowerCase();
      var ci = code ? data.codes.indexOf(code) : -1;
      if (!code && !text) { return null; }
      return function (f) {
        return (!code || f[0] === ci) && (!text || (f[1] !== null && f[1].toLowerCase().indexOf(text) >= 0));
      };
    },
    cells: function (f) {
      var serial = el("td", { "class": "serial-cell" }, [f[1] === null ? "—" : serialButton(f[1])]);
      return [el("td", { text: data.codes[f[0]] }), serial, el("td", { "class": "num", text: String(f[2]) }),
        el("td", { text: data.details[f[3]] })];
    },
    describe: function () {
      var parts = [];
      if (codeSelect.value) { parts.push("code " + codeSelect.value); }
      if (serialInput.value.trim()) { parts.push("serial containing “" + serialInput.value.trim() + "”"); }
      return " finding(s)" + (parts.length ? " with " + parts.join(" and ") : "");
    }
  });
  var findingsForm = document.getElementById("findings-form");
  findingsForm.addEventListener("submit", function (e) { e.preventDefault(); findings.filter(); });
  findingsForm.addEventListener("reset", function () { setTimeout(function () { findings.filter(); }, 0); });
  codeSelect.addEventListener("change", function () { findings.filter(); });
  document.querySelectorAll("button.show-code").forEach(function (b) {
    b.addEventListener("click", function () {
      codeSelect.value = b.getAttribute("data-code"); serialInput.value = "";
      findings.filter();
      document.getElementById("findings-list-h").scrollIntoView();
      codeSelect.focus();
    });
  });

  // --- duty -----------------------------------------------------------------------------------------
  var entryInput = document.getElementById("d-entry"), shortOnly = document.getElementById("d-short");
  var duty = new Paged({
    rows: data.entries, table: "#duty-table", status: "d-status", pager: "d-pager",
    match: function () {
      var text = entryInput.value.trim().toLowerCase(), only = shortOnly.checked;
      if (!text && !only) { return null; }
      return function (e) { return (!only || e[7]) && (!text || e[0].toLowerCase().indexOf(text) >= 0); };
    },
    cells: function (e) {
      var cells = [el("th", { scope: "row", text: e[0] })];
      for (var i = 1; i < 7; i++) {
        cells.push(el("td", { "class": "num" + (i === 6 && e[7] ? " short" : ""), text: i < 3 ? fmt(e[i]) : e[i] }));
      }
      cells.push(el("td", {}, [e[7] ? el("strong", { text: "SHORTFALL" }) : "paid in full"]));
      return cells;
    },
    describe: function () {
      var parts = [];
      if (entryInput.value.trim()) { parts.push("entry containing “" + entryInput.value.trim() + "”"); }
      if (shortOnly.checked) { parts.push("a shortfall"); }
      return " customs entr(ies)" + (parts.length ? " with " + parts.join(" and ") : "");
    }
  });
  var dutyForm = document.getElementById("duty-form");
  dutyForm.addEventListener("submit", function (e) { e.preventDefault(); duty.filter(); });
  dutyForm.addEventListener("reset", function () { setTimeout(function () { duty.filter(); }, 0); });
  shortOnly.addEventListener("change", function () { duty.filter(); });

  // --- one unit's timeline --------------------------------------------------------------------------
  var result = document.getElementById("unit-result");
  var serialIndex = null, findingsOf = null;
  function unitNumber(serial) {
    if (!serialIndex) {
      serialIndex = new Map();
      data.serials.forEach(function (s, i) { serialIndex.set(s, i); });
    }
    return serialIndex.get(serial);
  }
  function unitFindings(serial) {
    if (!findingsOf) {
      findingsOf = new Map();
      data.findings.forEach(function (f) {
        if (f[1] === null) { return; }
        var list = findingsOf.get(f[1]);
        if (list) { list.push(f); } else { findingsOf.set(f[1], [f]); }
      });
    }
    return findingsOf.get(serial) || [];
  }
  function showUnit(serial, focus) {
    if (!result || data.omitted) { return; }
    var n = serial ? unitNumber(serial) : undefined;
    var heading = el("h3", { id: "unit-title", tabindex: "-1" });
    if (n === undefined) {
      heading.textContent = serial ? "No unit " + serial + " as of this report" : "Give a serial";
      var near = [], text = serial.toLowerCase();
      for (var i = 0; text && i < data.serials.length && near.length < 10; i++) {
        if (data.serials[i].toLowerCase().indexOf(text) >= 0) { near.push(data.serials[i]); }
      }
      var children = [heading];
      if (near.length) {
        children.push(el("p", { text: "Serials containing “" + serial + "”:" }));
        children.push(el("ul", {}, near.map(function (s) { return el("li", {}, [serialButton(s)]); })));
      }
      result.replaceChildren.apply(result, children);
      if (focus) { heading.focus(); }
      return;
    }
    var chain = data.chains[data.chainOf[n]], found = unitFindings(serial);
    var byIndex = new Map();
    found.forEach(function (f) { (byIndex.get(f[2]) || byIndex.set(f[2], []).get(f[2])).push(f); });
    heading.textContent = "Unit " + serial;
    var last = data.steps[String(chain[chain.length - 1])];
    var summary = el("p", { text: fmt(chain.length) + " step(s); latest: " + data.kinds[last[0]] + " at " + last[1]
      + ". " + (found.length ? fmt(found.length) + " finding(s)." : "No findings.") });
    var list = el("ol", { "class": "chain", "aria-label": "Chain of custody of " + serial + ", oldest first" });
    chain.forEach(function (index, k) {
      var s = data.steps[String(index)], signer = data.signers[s[2]];
      var flagged = byIndex.get(index) || [];
      var dl = el("dl", {}, [
        el("dt", { text: "time" }), el("dd", {}, [el("time", { datetime: s[1], text: s[1] })]),
        el("dt", { text: "signer" }), el("dd", {}, [(signer[1] || "unregistered key") + " — key ",
          el("code", { "class": "hash", text: signer[0] })]),
        el("dt", { text: "place" }), el("dd", { text: s[4] || "—" }),
        el("dt", { text: "log index" }), el("dd", { text: String(index) }),
        el("dt", { text: "hash" }), el("dd", {}, [el("code", { "class": "hash", text: s[3] })])
      ]);
      s[5].forEach(function (d) { dl.appendChild(el("dt", { text: d[0] })); dl.appendChild(el("dd", { text: d[1] })); });
      flagged.forEach(function (f) {
        dl.appendChild(el("dt", {}, [el("strong", { text: "finding" })]));
        dl.appendChild(el("dd", {}, [el("strong", { text: data.codes[f[0]] }), ": " + data.details[f[3]]]));
      });
      list.appendChild(el("li", flagged.length ? { "class": "flagged" } : {}, [
        el("span", { "class": "kind", text: (k + 1) + ". " + data.kinds[s[0]] }),
        flagged.length ? el("span", { text: " — " + flagged.length + " finding(s)" }) : "", dl]));
    });
    var fh = el("h4", { text: "Findings for " + serial });
    var flist = found.length
      ? el("ul", { "class": "unit-findings" }, found.map(function (f) {
        return el("li", {}, [el("strong", { text: data.codes[f[0]] }), " at index " + f[2] + ": " + data.details[f[3]]]);
      }))
      : el("p", { text: "No findings for this unit." });
    result.replaceChildren(heading, summary, list, fh, flist);
    if (focus) { heading.focus(); }
  }
  var unitForm = document.getElementById("unit-form");
  var unitInput = document.getElementById("u-serial");
  if (unitForm) {
    unitForm.addEventListener("submit", function (e) {
      e.preventDefault();
      showUnit(unitInput.value.trim(), true);
    });
  }
  document.addEventListener("click", function (e) {
    var b = e.target && e.target.closest ? e.target.closest("button.serial") : null;
    if (!b || !unitForm) { return; }
    var serial = b.getAttribute("data-serial");
    unitInput.value = serial;
    showUnit(serial, false);
    document.getElementById("unit").scrollIntoView();
    document.getElementById("unit-title").focus();
  });
  function fromHash() {
    var m = /^#unit=(.+)$/.exec(location.hash);
    if (m && unitForm) {
      var serial = decodeURIComponent(m[1]);
      unitInput.value = serial; showUnit(serial, true);
    }
  }
  window.addEventListener("hashchange", fromHash);

  findings.filter();
  duty.filter();
  fromHash();
  document.documentElement.setAttribute("data-ready", "1");
}());
