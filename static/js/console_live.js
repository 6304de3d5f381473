// The console, live: rows appear, change and move between "In progress" and "Finished" as
// their jobs go (training.consumers.ConsoleConsumer). The socket carries the page's query,
// so the server says of each row whether it matches the page's filters. A row is placed
// where the page's order puts it when that is on this page (newest or oldest first);
// anywhere else a notice counts it ("2 new — show"), as a reload would show them.
(function () {
  const lists = {
    active: document.getElementById("active-experiments"),
    finished: document.getElementById("finished-experiments"),
    datasets: document.getElementById("datasets"),
  };
  if (!lists.active) return;
  const sort = new URLSearchParams(window.location.search).get("sort") || "-created";
  const pageParams = { active: "ap", finished: "fp", datasets: "dp" };
  const unseen = { active: new Set(), finished: new Set(), datasets: new Set() };

  const rowOf = (kind, id) => document.querySelector(`tr[data-row="${kind}-${id}"]`);
  const shownKeys = () => Array.from(document.querySelectorAll("tr[data-row]"), (row) => row.dataset.row);

  function parse(html) {
    const body = document.createElement("tbody");
    body.innerHTML = html.trim();
    return body.firstElementChild;
  }

  function bodyFor(event) {
    const table = lists[event.list];
    if (event.list !== "datasets") return table.tBodies[0];
    const body = Array.from(table.tBodies).find((b) => b.dataset.group === event.section);
    if (body || table.querySelector("tbody.ds-group")) return body;
    // The first dataset on an empty page: its group's heading too.
    const fresh = document.createElement("tbody");
    fresh.className = "ds-group";
    fresh.dataset.group = event.section;
    const heading = fresh.insertRow().appendChild(document.createElement("th"));
    heading.colSpan = 4;
    heading.scope = "rowgroup";
    heading.textContent = event.section;
    table.tBodies[0].replaceWith(fresh);
    return fresh;
  }

  // Where the page's order puts the row, when that is on this page; false otherwise.
  function place(event, row) {
    const table = lists[event.list];
    if (!table || (sort !== "-created" && sort !== "created")) return false;
    const body = bodyFor(event);
    if (!body) return false;
    const created = Date.parse(event.created);
    const rows = Array.from(body.querySelectorAll("tr[data-row]"));
    const before = rows.findIndex((r) =>
      sort === "-created" ? Date.parse(r.dataset.created) < created : Date.parse(r.dataset.created) > created);
    if (before === -1 && table.dataset.full) return false; // it belongs on a later page
    if (before === 0 && Number(table.dataset.page || 1) > 1) return false; // on an earlier one
    if (before === -1) body.append(row);
    else body.insertBefore(row, rows[before]);
    table.querySelectorAll("tr.empty").forEach((empty) => empty.remove());
    return true;
  }

  function notice(list, key) {
    unseen[list].add(key);
    const table = lists[list];
    let note = table.previousElementSibling;
    if (!note || !note.classList.contains("live-notice")) {
      note = document.createElement("p");
      note.className = "live-notice muted";
      note.setAttribute("role", "status");
      table.before(note);
    }
    const params = new URLSearchParams(window.location.search);
    params.delete(pageParams[list]);
    note.replaceChildren(`${unseen[list].size} new or changed — `);
    const link = note.appendChild(document.createElement("a"));
    link.href = `?${params}`;
    link.textContent = "show";
  }

  function showRow(event) {
    const key = `${event.kind}-${event.id}`;
    const existing = rowOf(event.kind, event.id);
    if (!event.matches) {
      existing?.remove();
      return;
    }
    const row = parse(event.html);
    const ticked = existing?.querySelector("input[type=checkbox]")?.checked;
    if (ticked) row.querySelector("input[type=checkbox]").checked = true;
    if (existing && existing.closest("tbody") === bodyFor(event)) {
      existing.replaceWith(row);
      return;
    }
    existing?.remove(); // it moved: "In progress" to "Finished", or to another team's group
    if (!place(event, row)) notice(event.list, key);
  }

  function removeRow(event) {
    rowOf(event.kind, event.id)?.remove();
    Object.values(unseen).forEach((keys) => keys.delete(`${event.kind}-${event.id}`));
  }

  // After a lost event or a reconnection: the lists afresh, from a render of the page.
  let refillWanted = false;
  let refreshing = null; // events heard while the render is on its way, applied after it
  async function refresh(socket) {
    if (refreshing) return;
    refreshing = [];
    try {
      const response = await fetch(window.location.href);
      const fresh = response.ok && new DOMParser().parseFromString(await response.text(), "text/html");
      if (fresh) {
        for (const [name, table] of Object.entries(lists)) {
          const other = fresh.getElementById(table.id);
          if (!other) continue;
          Array.from(table.tBodies).forEach((body) => body.remove());
          Array.from(other.tBodies).forEach((body) => table.append(document.adoptNode(body)));
          table.dataset.full = other.dataset.full || "";
          unseen[name].clear();
          table.previousElementSibling?.classList.contains("live-notice") && table.previousElementSibling.remove();
        }
      }
    } finally {
      const heard = refreshing;
      refreshing = null;
      heard.forEach(handle);
      socket.send(JSON.stringify({ shown: shownKeys() }));
      document.body.dataset.consoleRefreshed = String(Number(document.body.dataset.consoleRefreshed || 0) + 1);
    }
  }

  function handle(event) {
    if (refreshing) refreshing.push(event);
    else if (event.type === "row") showRow(event);
    else if (event.type === "row_removed") removeRow(event);
  }

  let socket = null;
  let opened = false;
  Live.connect(`/ws/console/${window.location.search}`, {
    row: handle,
    row_removed: handle,
    sync() {
      if (!refillWanted) return;
      refillWanted = false;
      refresh(socket);
    },
  }, (open) => {
    socket = open;
    socket.send(JSON.stringify({ shown: shownKeys() }));
    // A reconnection may have missed events: the syncs that come with it start a refresh.
    if (opened) refillWanted = true;
    opened = true;
    document.body.dataset.consoleLive = "connected";
  }, (open) => {
    refillWanted = true;
    open.send(JSON.stringify({ refill: true }));
  });
})();
