// connpipe admin page: polls the admin HTTP API every second and renders
// it. Everything it shows and sends goes through /api/v1 (status, stats,
// weights), the API the admin CLI uses.
"use strict";

(function () {
  const POLL_MS = 1000;
  const TOKEN_KEY = "connpipe.admin.token";
  const READ_TOKEN_KEY = "connpipe.admin.read-token";
  const COLORS = ["#1f6fb4", "#d9480f", "#2b8a3e", "#7048e8", "#c2255c", "#5c7cfa", "#e67700", "#0b7285"];

  const $ = (sel) => document.querySelector(sel);

  // el builds an element; attrs with a leading "." set properties, others
  // attributes. Children are nodes or text (never parsed as HTML).
  function el(tag, attrs, ...children) {
    const e = tag.startsWith("svg:")
      ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4))
      : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null) continue;
      if (k.startsWith(".")) e[k.slice(1)] = v;
      else e.setAttribute(k, v);
    }
    for (const c of children) {
      if (c === undefined || c === null) continue;
      e.append(c instanceof Node ? c : String(c));
    }
    return e;
  }

  const fmt = {
    int: (n) => (n === undefined || n === null ? "–" : Math.round(n).toLocaleString("en-US")),
    rate: (n) => (n === undefined || n === null ? "–" : n < 10 ? n.toFixed(1) : Math.round(n).toLocaleString("en-US")),
    pct: (f) => (f === undefined || f === null || f < 0 ? "–" : (100 * f).toFixed(1) + " %"),
    bytes: (b) => {
      if (b === undefined || b === null || b < 0) return "–";
      const u = ["B", "KiB", "MiB", "GiB", "TiB"];
      let i = 0;
      while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
      return (i === 0 ? b : b.toFixed(1)) + " " + u[i];
    },
    age: (ms) => (ms < 1000 ? ms + " ms" : ms < 120000 ? (ms / 1000).toFixed(1) + " s" : Math.round(ms / 60000) + " min"),
    clock: (d) => d.toTimeString().slice(0, 8),
  };

  // Page state.
  const st = {
    status: null,
    stats: null,
    prevCapture: null, // {at, stats} of the previous poll, for rates
    form: { version: null, names: [], dirty: false, busy: false, applied: null },
    polls: 0,
  };

  // ---- polling -----------------------------------------------------------

  // readToken is the token reads send: the read token, or else the write
  // token (good for reads too). The read token is taken once the operator
  // has stopped typing (or left the field), so no poll goes out with half
  // a token and is refused.
  let committedReadToken = "";
  function readToken() {
    return committedReadToken || $("#token").value.trim();
  }
  let readTokenTimer = null;
  function commitReadToken() {
    clearTimeout(readTokenTimer);
    readTokenTimer = null;
    committedReadToken = $("#read-token").value.trim();
    sessionStorage.setItem(READ_TOKEN_KEY, committedReadToken);
  }

  async function getJSON(path) {
    const headers = { Accept: "application/json" };
    const token = readToken();
    if (token !== "") headers.Authorization = "Bearer " + token;
    const r = await fetch(path, { cache: "no-store", headers });
    let body = null;
    try { body = await r.json(); } catch (e) { body = null; }
    if (!r.ok) {
      let why = body && body.error ? body.error : r.status + " " + r.statusText;
      if (r.status === 401) why = "a token is needed to read: type the read token (ADMIN_READ_TOKEN) at the top";
      if (r.status === 403) why = "wrong read token";
      throw new Error(path + ": " + why);
    }
    return body;
  }

  async function poll() {
    if (readTokenTimer !== null) { // the read token is being typed: wait for it
      setTimeout(poll, POLL_MS);
      return;
    }
    try {
      const [status, stats, history] = await Promise.all([getJSON("api/v1/status"), getJSON("api/v1/stats"), getJSON("api/v1/history")]);
      // A poll sent before a change this page made may answer after it:
      // versions only grow, so an older table never replaces a newer one.
      if (st.status && st.status.table && status.table && status.table.version < st.status.table.version) {
        status.table = st.status.table;
      }
      st.status = status;
      st.stats = stats;
      st.history = history;
      st.polls++;
      render();
      banner("");
    } catch (e) {
      banner("Cannot read the admin API: " + e.message + " — retrying every second.");
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  function banner(text) {
    const b = $("#banner");
    b.textContent = text;
    b.hidden = text === "";
  }

  // ---- rendering ---------------------------------------------------------

  function render() {
    const s = st.status;
    document.body.dataset.version = s.table ? s.table.version : "";
    document.body.dataset.polls = st.polls;
    $("#table-summary").textContent = "version " + s.table.version + " · " + describe(s.table);
    const conv = $("#converged");
    conv.textContent = s.consumers_alive === 0 ? "no live consumers" : s.converged ? "all consumers converged" : "converging…";
    conv.className = "pill " + (s.consumers_alive === 0 ? "bad" : s.converged ? "good" : "");
    const conn = $("#connected");
    conn.textContent = s.connected ? "rabbitmq connected" : "rabbitmq NOT connected";
    conn.className = "pill " + (s.connected ? "" : "bad");
    conn.title = s.session || "";
    $("#updated").textContent = "updated " + fmt.clock(new Date());
    renderInstances();
    renderHistory();
    renderChart();
    renderForm();
    renderConsumers();
    renderCapture();
    renderBroker();
  }

  function colorOf(name) {
    const names = st.status.backends.map((b) => b.name);
    const i = names.indexOf(name);
    return COLORS[(i < 0 ? 0 : i) % COLORS.length];
  }

  function tallyOf(name) {
    if (!st.stats) return null;
    return st.stats.backends.find((b) => b.name === name) || null;
  }

  function renderInstances() {
    const stats = st.stats;
    const table = $("#instances");
    if (stats) {
      table.dataset.shareFrom = stats.share.from;
      table.dataset.shareTo = stats.share.to;
      const secs = stats.share.to - stats.share.from + 1;
      $("#share-window").textContent = "observed over the last " + secs + " s (" + fmt.int(stats.total) + " records); records/s over the last " +
        (stats.rate.to - stats.rate.from + 1) + " s";
    }
    const rows = st.status.backends.map((b) => {
      const t = tallyOf(b.name);
      const observed = t ? t.share : null;
      const off = observed !== null && observed >= 0 && Math.abs(observed - b.share) > 0.02;
      const ha = b.sentinel ? "primary " + b.sentinel.primary + ", replicas: " + (b.sentinel.replicas.join(", ") || "none") : "";
      const notes = [ha, b.error, t && t.error, t && t.partial ? "still counting older seconds" : ""].filter(Boolean).join("; ");
      return el("tr", { "data-backend": b.name },
        el("td", {}, el("span", { class: "swatch", "data-color": colorOf(b.name) }), b.name),
        el("td", { class: "mono" }, b.addr),
        el("td", { class: "state-cell" }, stateBadge(b.state)),
        el("td", { class: "num weight" }, b.weight),
        el("td", { class: "num share-target" }, fmt.pct(b.share)),
        el("td", { class: "num share-observed" + (off ? " off" : ""), "data-value": observed === null ? "" : observed,
          title: off ? "differs from the target by more than 2 points (recent weight change, or an instance out of rotation)" : "" },
          fmt.pct(observed)),
        el("td", { class: "num rate", "data-value": t ? t.rate : "" }, t ? fmt.rate(t.rate) : "–"),
        el("td", { class: "num records" }, t ? fmt.int(t.records) : "–"),
        el("td", { class: "num memory" }, fmt.bytes(b.used_memory)),
        el("td", { class: "muted small" }, notes));
    });
    table.tBodies[0].replaceChildren(...rows);
    for (const sw of table.querySelectorAll(".swatch")) sw.style.background = sw.dataset.color;
  }

  // stateBadge shows a backend state in its tone, both taken from the
  // states table the status answer carries.
  function stateBadge(name) {
    const info = (st.status.states || []).find((s) => s.name === name);
    return el("span", { class: "state tone-" + (info ? info.tone : "out"), title: info ? info.doc : "" }, name);
  }

  // niceMax rounds up to 1, 2 or 5 times a power of ten.
  function niceMax(v) {
    if (v <= 0) return 10;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function renderChart() {
    const stats = st.stats;
    const svg = $("#chart");
    const W = Math.max(svg.clientWidth, 300), H = Math.max(svg.clientHeight, 160);
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    const m = { l: 52, r: 12, t: 10, b: 22 };
    const pw = W - m.l - m.r, ph = H - m.t - m.b;
    const parts = [];
    if (!stats || stats.backends.length === 0) {
      svg.replaceChildren(el("svg:text", { x: W / 2, y: H / 2, class: "axis", "text-anchor": "middle" }, "no data yet"));
      return;
    }
    // Show the history from a little before the first second with any
    // record (at least the last 30 s), so a young system fills the width.
    const total = stats.to - stats.from + 1;
    let first = total;
    for (const b of stats.backends) {
      const i = b.counts.findIndex((c) => c > 0);
      if (i >= 0 && i < first) first = i;
    }
    const skip = Math.max(0, Math.min(first - 5, total - 30));
    const series = stats.backends.map((b) => b.counts.slice(skip));
    const n = total - skip;
    let max = 0;
    for (const counts of series) for (const c of counts) if (c > max) max = c;
    const ymax = niceMax(max * 1.1);
    const x = (i) => m.l + (n <= 1 ? 0 : (i * pw) / (n - 1));
    const y = (v) => m.t + ph - (v * ph) / ymax;
    for (let k = 0; k <= 4; k++) {
      const v = (ymax * k) / 4;
      parts.push(el("svg:line", { class: "grid", x1: m.l, x2: W - m.r, y1: y(v), y2: y(v) }));
      parts.push(el("svg:text", { class: "axis", x: m.l - 6, y: y(v) + 4, "text-anchor": "end" }, ymax >= 10 ? fmt.int(v) : v.toFixed(1)));
    }
    // Ticks back from the newest second.
    const step = n <= 45 ? 10 : n <= 90 ? 15 : n <= 180 ? 30 : 60;
    for (let back = 0; back < n - step / 3; back += step) {
      const i = n - 1 - back;
      parts.push(el("svg:line", { class: "grid", x1: x(i), x2: x(i), y1: m.t, y2: m.t + ph }));
      parts.push(el("svg:text", { class: "axis", x: x(i), y: H - 6, "text-anchor": back === 0 ? "end" : "middle" },
        back === 0 ? "now" : "−" + (back % 60 === 0 ? back / 60 + " min" : back + " s")));
    }
    const legend = [];
    stats.backends.forEach((b, k) => {
      const pts = series[k].map((c, i) => x(i).toFixed(1) + "," + y(c).toFixed(1)).join(" ");
      parts.push(el("svg:polyline", { points: pts, stroke: colorOf(b.name), "data-backend": b.name,
        "data-rate": b.rate, "data-last": b.counts[b.counts.length - 1] }));
      legend.push(el("span", { "data-backend": b.name },
        el("span", { class: "swatch", "data-color": colorOf(b.name) }), b.name + " " + fmt.rate(b.rate) + "/s"));
    });
    svg.replaceChildren(...parts);
    svg.dataset.from = stats.from + skip;
    svg.dataset.to = stats.to;
    $("#legend").replaceChildren(...legend);
    for (const sw of $("#legend").querySelectorAll(".swatch")) sw.style.background = sw.dataset.color;
  }

  function renderConsumers() {
    const s = st.status;
    const live = s.consumers.filter((c) => c.alive).length;
    $("#consumers-count").textContent = live + " alive of " + s.consumers.length + " heard of · table version " + s.table.version;
    const rows = s.consumers.map((c) => {
      const lag = !c.alive ? el("span", { class: "muted" }, "–")
        : c.versions_behind > 0 ? el("span", { class: "behind" }, c.versions_behind + " change" + (c.versions_behind === 1 ? "" : "s") + " behind")
        : el("span", { class: "yes" }, "up to date");
      const stored = c.stored ? Object.entries(c.stored).map(([k, v]) => k + " " + fmt.int(v)).join(", ") : "";
      return el("tr", { "data-consumer": c.id, class: c.alive ? "" : "muted" },
        el("td", { class: "mono" }, c.id),
        el("td", {}, c.host),
        el("td", {}, el("span", { class: c.alive ? "yes" : "no" }, c.alive ? "alive" : "dead")),
        el("td", {}, el("span", { class: c.ready ? "yes" : "behind" }, c.ready ? "ready" : "starting")),
        el("td", { class: "num version" }, c.version),
        el("td", { class: "num" }, c.position),
        el("td", { class: "lag" }, lag),
        el("td", { class: "num rate" }, c.alive ? fmt.rate(c.rate) : "–"),
        el("td", { class: "num unacked" }, fmt.int(c.unacked)),
        el("td", { class: "num", title: stored }, fmt.int(c.records)),
        el("td", { class: "num" }, fmt.int(c.acked)),
        el("td", { class: "num" }, fmt.age(c.last_heartbeat_age_ms) + " ago"));
    });
    if (rows.length === 0) rows.push(el("tr", {}, el("td", { colspan: 12, class: "muted" }, "no consumer has sent a heartbeat")));
    $("#consumers").tBodies[0].replaceChildren(...rows);
  }

  // The control log's changes, newest first; text only (a hand-published
  // message may say anything).
  function renderHistory() {
    const entries = (st.history && st.history.entries) || [];
    const rows = entries.slice(-50).reverse().map((e) => el("tr", { "data-position": e.position, class: e.refused ? "muted" : "" },
      el("td", { class: "mono" }, e.time && !e.time.startsWith("0001") ? fmt.clock(new Date(e.time)) : "–"),
      el("td", { class: "by" }, e.by || "–"),
      el("td", { class: "num" }, e.version),
      el("td", { class: "what" }, e.refused ? e.what + " (refused: " + e.refused + ")" : e.what)));
    if (rows.length === 0) rows.push(el("tr", {}, el("td", { colspan: 4, class: "muted" }, "no change since admin started")));
    $("#history").tBodies[0].replaceChildren(...rows);
  }

  function kvRows(tbody, rows) {
    tbody.replaceChildren(...rows.map(([k, v, key]) => el("tr", { "data-key": key || "" }, el("td", {}, k), el("td", {}, v))));
  }

  function renderCapture() {
    const c = st.status.capture;
    const tbody = $("#capture").tBodies[0];
    renderCaptures(st.status.captures || []);
    if (!c) {
      $("#capture-url").textContent = "";
      kvRows(tbody, [["not configured", "set CAPTURE_METRICS_URL"]]);
      return;
    }
    $("#capture-url").textContent = c.count > 1 ? c.answered + " of " + c.count + " answering" : c.url;
    if (c.error) {
      kvRows(tbody, [["cannot scrape", c.error]]);
      st.prevCapture = null;
      return;
    }
    const now = Date.now();
    const prev = st.prevCapture;
    const rate = (field) => {
      if (!prev || now <= prev.at || c[field] < prev.c[field]) return "";
      return " (" + fmt.rate(((c[field] - prev.c[field]) * 1000) / (now - prev.at)) + "/s)";
    };
    const reasons = Object.entries(c.decode_errors_by_reason || {}).filter(([, v]) => v > 0)
      .map(([k, v]) => k + " " + fmt.int(v)).join(", ");
    kvRows(tbody, [
      ["packets seen", fmt.int(c.packets) + rate("packets"), "packets"],
      ["records published", fmt.int(c.records_published) + rate("records_published"), "published"],
      ["records confirmed", fmt.int(c.records_confirmed) + rate("records_confirmed"), "confirmed"],
      ["kernel drops", fmt.int(c.kernel_drops) + workerDrops(c), "kernel_drops"],
      ["ring freezes (a reader's ring was full)", fmt.int(c.ring_freezes), "ring_freezes"],
      ["decode errors", fmt.int(c.decode_errors) + (reasons ? " — " + reasons : ""), "decode_errors"],
      ["spooled on disk (broker away or slow)", c.spool_max_bytes > 0
        ? fmt.int(c.spool_records) + " records, " + fmt.bytes(c.spool_bytes) + " of " + fmt.bytes(c.spool_max_bytes) +
          (c.spool_records > 0 ? ", oldest " + Math.round(c.spool_oldest_seconds) + " s, draining " + fmt.rate(c.spool_drain_per_second) + "/s" : "")
        : "no spool (SPOOL_DIR unset)", "spool"],
      ["dropped by a full spool", fmt.int(c.spool_dropped), "spool_dropped"],
      ["broker flow control", c.broker_blocked > 0 ? "blocked (memory or disk alarm)" : "not blocked", "blocked"],
    ]);
    if (!prev || now - prev.at >= 3000) st.prevCapture = { at: now, c: c };
  }

  // workerDrops breaks kernel drops down by live reader, when any dropped.
  function workerDrops(c) {
    const by = Object.entries(c.kernel_drops_by_worker || {});
    if (by.length < 2 || c.kernel_drops === 0) return "";
    return " — " + by.sort(([a], [b]) => a.localeCompare(b, "en", { numeric: true }))
      .map(([w, v]) => "reader " + w + " " + fmt.int(v)).join(", ");
  }

  // renderCaptures lists every capture on its own: a scaled or multi-host
  // capture is several.
  function renderCaptures(list) {
    const rows = list.map((c) => el("tr", { "data-capture": c.name + (c.addr ? "@" + c.addr : "") },
      el("td", { title: c.url }, c.name + (c.addr && c.addr !== c.name ? " (" + c.addr + ")" : "")),
      el("td", { class: "num packets" }, c.error ? "–" : fmt.int(c.packets)),
      el("td", { class: "num confirmed" }, c.error ? "–" : fmt.int(c.records_confirmed)),
      el("td", { class: "num drops" }, c.error ? "–" : fmt.int(c.kernel_drops)),
      el("td", { class: "state " + (c.error ? "down" : "up") }, c.error ? c.error : "answering")));
    $("#captures").tBodies[0].replaceChildren(...rows);
    $("#captures").hidden = list.length === 0;
  }

  function renderBroker() {
    const b = st.status.broker;
    const tbody = $("#broker").tBodies[0];
    if (!b) { kvRows(tbody, [["not read", "–"]]); return; }
    const unacked = st.status.consumers.filter((c) => c.alive).reduce((s, c) => s + (c.unacked || 0), 0);
    const rows = [
      ["queue depth (" + (b.queue || "conn.records") + ", ready)", fmt.int(b.ready), "ready"],
      ["delivered, unacked (live consumers)", fmt.int(unacked), "unacked"],
      ["consumers on the queue", fmt.int(b.consumers), "consumers"],
      ["dead-lettered (" + (b.dead_queue || "conn.records.dead") + ")", fmt.int(b.dead), "dead"],
    ];
    if (b.error) rows.unshift(["cannot read", b.error, "error"]);
    kvRows(tbody, rows);
  }

  // ---- routing form ------------------------------------------------------
  //
  // One base version for the whole form: the table it was loaded from. The
  // weights and the mode follow the table in force until the operator
  // touches one of them; every change is sent with that version as
  // If-Match, so a change made meanwhile by someone else is refused.

  function renderForm() {
    const t = st.status.table;
    const f = st.form;
    const names = t.backends.map((b) => b.name);
    if (names.join() !== f.names.join()) {
      f.names = names;
      const fields = names.map((name) => el("label", {}, name,
        el("input", { type: "number", min: 0, max: 256, step: 1, name: name, id: "w-" + name, "data-backend": name, inputmode: "numeric" })));
      $("#weight-fields").replaceChildren(...fields);
      for (const inp of $("#weight-fields").querySelectorAll("input")) watch(inp);
      $("#remove-name").replaceChildren(...names.map((n) => el("option", { value: n }, n)));
      f.dirty = false;
    }
    if (!f.dirty && !f.busy) loadForm();
    showApplied();
    const drift = $("#form-drift");
    drift.textContent = f.version !== null && f.version !== t.version
      ? "The table has moved on to version " + t.version + " since; a change will be refused." : "";
    drift.title = drift.textContent;
  }

  // loadForm shows a table (by default the one of the last poll) in the form.
  function loadForm(table) {
    const t = table || st.status.table;
    st.form.version = t.version;
    st.form.dirty = false;
    for (const b of t.backends) {
      const inp = document.getElementById("w-" + b.name);
      if (inp) { inp.value = b.weight; inp.classList.remove("changed"); inp.dataset.loaded = b.weight; }
    }
    const mode = t.mode || "weighted", key = t.hash_key || "src", sticky = !!t.sticky;
    $("#mode").value = mode;
    $("#mode").dataset.loaded = mode;
    $("#hash-key").value = key;
    $("#hash-key").dataset.loaded = key;
    $("#sticky").checked = sticky;
    $("#sticky").dataset.loaded = String(sticky);
    $("#hash-key").disabled = mode !== "hash";
    $("#form-version").textContent = t.version;
    const form = $("#weights-form");
    form.dataset.loads = +(form.dataset.loads || 0) + 1;
  }

  // followed are the fields loaded from the table.
  function followed() {
    return [...$("#weight-fields").querySelectorAll("input"), $("#mode"), $("#hash-key"), $("#sticky")];
  }

  function current(e) {
    return e.type === "checkbox" ? String(e.checked) : e.value;
  }

  // watch stops the form following the table while one of its fields has
  // the focus, so nothing changes under the cursor; leaving it unchanged
  // resumes.
  function watch(e) {
    e.addEventListener("focus", () => { st.form.dirty = true; });
    e.addEventListener("blur", () => {
      const edited = followed().some((i) => current(i) !== i.dataset.loaded);
      if (!edited && !st.form.busy) st.form.dirty = false;
    });
    const edit = () => {
      st.form.dirty = true;
      e.classList.toggle("changed", current(e) !== e.dataset.loaded);
      if (e.id === "mode") $("#hash-key").disabled = e.value !== "hash";
    };
    e.addEventListener("input", edit);
    e.addEventListener("change", edit);
  }

  // weightValue gives what the API is sent for one field: an integer, or
  // the text as typed so the API names what is wrong with it.
  function weightValue(inp) {
    const s = inp.value !== "" ? inp.value.trim() : inp.validity.badInput ? "(not a number)" : "";
    return /^-?\d+$/.test(s) ? parseInt(s, 10) : s;
  }

  function submitWeights(ev) {
    ev.preventDefault();
    const weights = {};
    for (const inp of $("#weight-fields").querySelectorAll("input")) {
      const v = weightValue(inp);
      if (v !== "") weights[inp.dataset.backend] = v; // an empty field keeps its weight
    }
    send($("#apply"), "PUT", "api/v1/weights", { weights });
  }

  function submitMode() {
    const body = { mode: $("#mode").value, sticky: $("#sticky").checked };
    if (body.mode === "hash") body.hash_key = $("#hash-key").value;
    send($("#apply-mode"), "PUT", "api/v1/mode", body);
  }

  function addBackend() {
    const body = { name: $("#new-name").value.trim(), addr: $("#new-addr").value.trim() };
    const w = weightValue($("#new-weight"));
    if (w !== "") body.weight = w;
    send($("#add-backend"), "POST", "api/v1/backends", body, () => {
      for (const id of ["#new-name", "#new-addr", "#new-weight"]) $(id).value = "";
    });
  }

  function removeBackend() {
    const name = $("#remove-name").value;
    if (!name) return;
    send($("#remove-backend"), "DELETE", "api/v1/backends/" + encodeURIComponent(name), null);
  }

  // describe renders a table as the result line shows it.
  function describe(t) {
    let mode = t.mode || "weighted";
    if (mode === "hash") mode += " by " + (t.hash_key || "src");
    if (t.sticky) mode += ", sticky";
    return mode + "; " + t.backends.map((b) => b.name + "=" + b.weight).join(" ");
  }

  // send makes one change with the token and the form's version, and
  // shows the answer in words.
  async function send(button, method, path, body, onApplied) {
    const f = st.form;
    if (f.busy || f.version === null) return;
    const token = $("#token").value.trim();
    sessionStorage.setItem(TOKEN_KEY, token);
    const headers = { "If-Match": '"' + f.version + '"' };
    if (body !== null) headers["Content-Type"] = "application/json";
    if (token !== "") headers.Authorization = "Bearer " + token;
    f.busy = true;
    f.applied = null;
    button.disabled = true;
    showResult("", "sending…", "");
    try {
      const r = await fetch(path, { method, headers, body: body === null ? undefined : JSON.stringify(body) });
      let answer = null;
      try { answer = await r.json(); } catch (e) { answer = null; }
      if (r.ok) {
        f.applied = { version: answer.version, text: "Applied: version " + answer.version + " — " + describe(answer) + "." };
        f.busy = false;
        st.status.table = answer;
        renderForm();
        loadForm(answer);
        showApplied();
        if (onApplied) onApplied();
      } else {
        showResult("refused", refusal(r.status, answer), r.status);
      }
    } catch (e) {
      showResult("refused", "Not sent: " + e.message + ". Nothing was changed.", 0);
    } finally {
      f.busy = false;
      button.disabled = false;
    }
  }

  // showApplied tells how far the consumers are with the change just
  // applied, from the latest status.
  function showApplied() {
    const a = st.form.applied;
    if (!a) return;
    const live = st.status.consumers.filter((c) => c.alive);
    const done = live.filter((c) => c.version >= a.version).length;
    const how = live.length === 0 ? "No live consumer to apply it."
      : done === live.length ? "All " + live.length + " live consumer" + (live.length === 1 ? " has" : "s have") + " applied it."
      : done + " of " + live.length + " live consumers have applied it…";
    showResult("ok", a.text + " " + how, 200);
  }

  // refusal puts an error answer into words.
  function refusal(code, body) {
    const why = body && body.error ? body.error : "HTTP " + code;
    switch (code) {
      case 401: return "Refused: a token is needed (" + why + "). Nothing was changed.";
      case 403: return "Refused: wrong token. Nothing was changed.";
      case 409: return "Refused: stale version — the routing was changed by someone else since you loaded version " +
        st.form.version + " (now version " + (body && body.version !== undefined ? body.version : "?") +
        "). Nothing was changed; press “Reload current” and try again. (" + why + ")";
      case 400: return "Refused: " + why + ". Nothing was changed.";
      case 503: return "Not applied: " + why + ".";
      default: return "Refused (HTTP " + code + "): " + why + ".";
    }
  }

  function showResult(kind, text, code) {
    const p = $("#form-result");
    p.className = kind;
    p.dataset.status = code;
    p.textContent = text;
  }

  // reload reads the table in force now and starts the form from it.
  async function reload() {
    st.form.applied = null;
    showResult("", "", "");
    try {
      const t = await getJSON("api/v1/weights");
      if (st.status) st.status.table = t;
      loadForm(t);
    } catch (e) {
      showResult("refused", "Cannot read the weights: " + e.message, 0);
    }
  }

  // LOOKUP_LIMIT is how many records the lookup box lists; the count above
  // the list is the whole window's, with no limit.
  const LOOKUP_LIMIT = 200;

  // lookup asks the records API, with the read token like every read,
  // for the records of one address or key and for their count.
  async function lookup(ev) {
    ev.preventDefault();
    const field = $("#lookup-field").value, value = $("#lookup-value").value.trim();
    const summary = $("#lookup-summary"), table = $("#lookup-records");
    if (value === "") {
      summary.className = "refused";
      summary.textContent = "Type an address or a key first.";
      return;
    }
    const q = new URLSearchParams({ since: $("#lookup-since").value, [field]: value });
    const counted = new URLSearchParams(q);
    counted.set("count", "true");
    q.set("limit", String(LOOKUP_LIMIT));
    summary.className = "";
    summary.textContent = "looking up…";
    try {
      const [res, count] = await Promise.all([getJSON("api/v1/records?" + q), getJSON("api/v1/records?" + counted)]);
      const per = Object.keys(count.count_by_backend).sort().map((n) => n + " " + fmt.int(count.count_by_backend[n])).join(", ");
      let text = fmt.int(count.total) + (count.total === 1 ? " record" : " records") + " (" + per + ")";
      if (count.total > res.records.length) text += ", the newest " + fmt.int(res.records.length) + " below";
      if (count.owner) text += "; asked only " + count.owner + ", the key's owner";
      const errs = Object.keys(count.errors || {});
      if (errs.length > 0) text += "; not read: " + errs.join(", ");
      summary.className = errs.length > 0 ? "refused" : "accepted";
      summary.dataset.total = String(count.total);
      summary.textContent = text;
      const rows = res.records.slice().reverse().map((r) => el("tr", {},
        el("td", { class: "mono" }, new Date(r.ts_ns / 1e6).toISOString().replace("T", " ").slice(0, 23)),
        el("td", {}, r.backend),
        el("td", { class: "mono" }, r.src_ip + ":" + r.src_port),
        el("td", { class: "mono" }, r.dst_ip + ":" + r.dst_port),
        el("td", { class: "num mono" }, "0x" + (r.tcp_flags || 0).toString(16).padStart(4, "0")),
        el("td", { class: "num" }, fmt.int(r.ip_len || 0)),
        el("td", { class: "mono" }, r.key || "")));
      table.querySelector("tbody").replaceChildren(...rows);
      table.hidden = rows.length === 0;
    } catch (e) {
      summary.className = "refused";
      summary.textContent = "Cannot look up: " + e.message;
      table.querySelector("tbody").replaceChildren();
      table.hidden = true;
    }
  }

  function init() {
    $("#token").value = sessionStorage.getItem(TOKEN_KEY) || "";
    $("#token").addEventListener("change", () => sessionStorage.setItem(TOKEN_KEY, $("#token").value.trim()));
    $("#read-token").value = committedReadToken = sessionStorage.getItem(READ_TOKEN_KEY) || "";
    $("#read-token").addEventListener("change", commitReadToken);
    $("#read-token").addEventListener("input", () => {
      clearTimeout(readTokenTimer);
      readTokenTimer = setTimeout(commitReadToken, 400);
    });
    $("#weights-form").addEventListener("submit", submitWeights);
    $("#reload").addEventListener("click", reload);
    $("#apply-mode").addEventListener("click", submitMode);
    $("#add-backend").addEventListener("click", addBackend);
    $("#remove-backend").addEventListener("click", removeBackend);
    $("#lookup-form").addEventListener("submit", lookup);
    for (const id of ["#mode", "#hash-key", "#sticky"]) watch($(id));
    for (const id of ["#new-name", "#new-addr", "#new-weight"]) {
      $(id).addEventListener("keydown", (ev) => {
        if (ev.key === "Enter") { ev.preventDefault(); addBackend(); }
      });
    }
    window.addEventListener("resize", () => { if (st.stats) renderChart(); });
    poll();
  }

  init();
})();
