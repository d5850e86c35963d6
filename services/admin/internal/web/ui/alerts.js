// The alerts firing in Prometheus (GET /api/v1/alerts, which admin reads
// from PROMETHEUS_URL and caches), with a link to Prometheus. The section
// stays hidden when admin has no PROMETHEUS_URL.
"use strict";
(function () {
  const READ_TOKEN_KEY = "connpipe.admin.read-token";
  const TOKEN_KEY = "connpipe.admin.token";
  const EVERY_MS = 10000;

  function cell(text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }

  function since(iso) {
    const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    if (s < 120) return s + " s";
    if (s < 7200) return Math.round(s / 60) + " min";
    return Math.round(s / 3600) + " h";
  }

  function render(rep) {
    const section = document.getElementById("alerts-section");
    section.hidden = !rep.configured;
    if (!rep.configured) return;
    const link = document.getElementById("prometheus-link");
    link.href = rep.link.replace(/\/$/, "") + "/alerts";
    link.textContent = rep.link;
    const state = document.getElementById("alerts-state");
    state.textContent = rep.error ? "Prometheus could not be read: " + rep.error
      : rep.firing.length === 0 ? "none firing" : "";
    const tbody = document.querySelector("#alerts tbody");
    tbody.replaceChildren(...rep.firing.map((a) => {
      const tr = document.createElement("tr");
      tr.dataset.alert = a.name;
      const labels = Object.entries(a.labels || {}).map(([k, v]) => k + "=" + v).join(" ");
      tr.append(cell(a.name + (labels ? " {" + labels + "}" : "")), cell(a.severity || "", a.severity),
        cell(a.summary || ""), cell(since(a.active_at)), cell(a.runbook || ""));
      return tr;
    }));
    if (rep.truncated) state.textContent = rep.truncated + " more not shown";
  }

  async function poll() {
    const token = sessionStorage.getItem(READ_TOKEN_KEY) || sessionStorage.getItem(TOKEN_KEY) || "";
    const headers = token ? { Authorization: "Bearer " + token } : {};
    try {
      const r = await fetch("api/v1/alerts", { cache: "no-store", headers });
      if (r.ok) render(await r.json());
    } catch (e) {
      // The main poll reports an unreachable admin.
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    poll();
    setInterval(poll, EVERY_MS);
  });
})();
