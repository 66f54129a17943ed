// batos dashboard: apply the kernel's `overview` events (Server-Sent Events) to the page.
// Data is written with textContent only: nothing from a mission becomes HTML.
"use strict";

(function () {
  const live = document.getElementById("live");

  function when(epoch) {
    if (epoch === null || epoch === undefined) return "-";
    const d = new Date(epoch * 1000), p = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
      `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  }

  function cell(row, text, cls) {
    const td = row.insertCell();
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }

  // each id cut to the shortest start (at least 8) no other listed id shares
  function shortIds(ids) {
    return new Map(ids.map((id) => {
      let width = 8;
      while (width < id.length && ids.some((o) => o !== id && o.startsWith(id.slice(0, width)))) width++;
      return [id, id.slice(0, width)];
    }));
  }

  function renderMissions(body, missions) {
    const shorts = shortIds(missions.map((m) => m.id));
    const rows = missions.map((m) => {
      const tr = document.createElement("tr");
      tr.dataset.id = m.id;
      tr.dataset.state = m.state;
      const link = document.createElement("a");
      link.href = "/missions/" + m.id;
      link.textContent = shorts.get(m.id);
      tr.insertCell().appendChild(link);
      cell(tr, m.state, "state " + m.state);
      cell(tr, when(m.created), "when");
      cell(tr, m.pass || "-");
      cell(tr, String(m.round));
      cell(tr, m.confidence === null || m.confidence === undefined ? "-" : m.confidence.toFixed(2));
      cell(tr, m.question, "text");
      return tr;
    });
    body.replaceChildren(...rows);
  }

  function renderCounters(body, status) {
    const pairs = Object.entries(status.kernel || {}).map(([k, v]) => ["kernel." + k, v])
      .sort().concat(Object.entries(status.counters || {}).sort());
    body.replaceChildren(...pairs.map(([name, value]) => {
      const tr = document.createElement("tr");
      tr.dataset.counter = name;
      cell(tr, name);
      cell(tr, String(value), "num");
      return tr;
    }));
  }

  function onOverview(data) {
    const missions = document.querySelector("#missions tbody");
    if (missions) renderMissions(missions, data.missions);
    const counters = document.querySelector("#counters tbody");
    if (counters) renderCounters(counters, data.status || {});
    const updated = document.getElementById("updated");
    if (updated) updated.textContent = "updated " + when(data.time);
    const mission = document.getElementById("mission");
    if (mission) {  // a mission page reloads when its mission moves on (a state, a pass)
      const row = data.missions.find((m) => m.id === mission.dataset.id);
      if (row && (row.state !== mission.dataset.state || (row.pass || "") !== mission.dataset.pass)) {
        location.reload();
      }
    }
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  }

  // a running mission's page: the text its current pass is writing, from the kernel
  const mission = document.getElementById("mission");
  if (mission && mission.dataset.live === "yes") {
    const text = document.getElementById("live-text");
    const label = document.getElementById("live-pass");
    let fresh = true;
    // the live rate: the tokens the chunks carry since this page saw the pass's first one
    let writing = null, tokens = 0, counted = 0, since = 0;
    const own = new EventSource("/missions/" + mission.dataset.id + "/events");
    own.addEventListener("chunk", (e) => {
      const data = JSON.parse(e.data);
      if (fresh) { text.textContent = ""; fresh = false; }
      const now = performance.now(), pass = data.pass + "/" + data.round;
      if (pass !== writing) { writing = pass; tokens = 0; counted = 0; since = now; }
      const piece = Number(data.tokens || 0);
      tokens += piece;
      if (now > since) counted += piece;  // the first chunk's tokens came before `since`
      const seconds = (now - since) / 1000;
      label.textContent = "(" + data.pass + ", round " + data.round + ") " + tokens + " tokens" +
        (seconds > 0 && counted ? ", " + (counted / seconds).toFixed(1) + " tokens/s" : "");
      text.textContent += data.text;
      sessionStorage.setItem("batosChunks", String(Number(sessionStorage.getItem("batosChunks") || 0) + 1));
      sessionStorage.setItem("batosTokens", String(Number(sessionStorage.getItem("batosTokens") || 0) + piece));
    });
    const done = () => { own.close(); location.reload(); };
    own.addEventListener("result", done);
    own.addEventListener("failed", done);
  }

  const source = new EventSource("/events");
  source.addEventListener("overview", (e) => {
    live.textContent = "live";
    live.className = "live on";
    onOverview(JSON.parse(e.data));
  });
  source.addEventListener("unreachable", (e) => {
    live.textContent = "kernel not answering: " + JSON.parse(e.data).error;
    live.className = "live";
  });
  source.onerror = () => { live.textContent = "dashboard not answering"; live.className = "live"; };
})();
