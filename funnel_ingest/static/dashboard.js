// The funnel dashboard: reads /funnel-report (summary) and /funnel-report/daily with the API key
// from this tab's sessionStorage, draws them with the vendored Chart.js. No inline code (CSP).
(function () {
  "use strict";

  const KEY = "funnel.apiKey";
  const PALETTE = ["#2563eb", "#16a34a", "#d97706", "#64748b", "#db2777", "#0891b2",
                   "#7c3aed", "#dc2626", "#65a30d", "#92400e", "#0f766e", "#a21caf"];
  const KNOWN = { ads: 0, website: 1, campaign_blast: 2, direct: 3 };
  const STEPS = [["lead_to_booking", "Lead \u2192 booking", "#93c5fd"],
                 ["booking_to_transaction", "Booking \u2192 transaction", "#60a5fa"],
                 ["lead_to_transaction", "Lead \u2192 transaction", "#1d4ed8"]];
  const COUNTS = [["leads", "Leads", "#93c5fd"], ["bookings", "Bookings", "#60a5fa"],
                  ["transactions", "Transactions", "#1d4ed8"]];
  const $ = (id) => document.getElementById(id);
  const charts = {};
  let knownChannels = null;
  let today = null;     // today's business date in FUNNEL_TIMEZONE (GET dashboard/settings)
  let loaded = null;    // the last report drawn: {page, daily, q (its filters), start, end}

  class AuthError extends Error {}

  // ------------------------------------------------------------------ formatting
  const integer = new Intl.NumberFormat("id-ID");
  const rupiah = new Intl.NumberFormat("id-ID", { style: "currency", currency: "IDR",
                                                   maximumFractionDigits: 0 });
  const pct = (x) => (x === null || x === undefined ? "\u2013" : (x * 100).toFixed(1) + "%");
  const money = (x) => (x === null || x === undefined ? "\u2013" : rupiah.format(x));
  function duration(s) {
    if (s === null || s === undefined) return "\u2013";
    if (s < 60) return Math.round(s) + "s";
    if (s < 3600) return Math.round(s / 60) + "m";
    if (s < 86400) return (s / 3600).toFixed(1) + "h";
    return (s / 86400).toFixed(1) + "d";
  }
  // The four usual channels keep their colours; the others take the rest in their order.
  function colours(channels) {
    const out = {};
    let n = 0;
    channels.forEach((c) => {
      out[c] = PALETTE[c in KNOWN ? KNOWN[c] : 4 + (n++ % (PALETTE.length - 4))];
    });
    return out;
  }
  const iso = (d) => d.toISOString().slice(0, 10);

  // ------------------------------------------------------------------ key handling
  function keyFromFragment() {
    const m = location.hash.match(/(?:^#|&)key=([^&]*)/);
    if (m) {
      sessionStorage.setItem(KEY, decodeURIComponent(m[1]));
      history.replaceState(null, "", location.pathname + location.search);
    }
  }

  function showLogin(message) {
    sessionStorage.removeItem(KEY);
    $("content").hidden = true;
    $("forget").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    document.body.dataset.state = "login";
    $("key").focus();
  }

  // ------------------------------------------------------------------ data
  function query() {
    const q = new URLSearchParams();
    q.set("start", $("start").value);
    q.set("end", $("end").value);
    const campaign = $("campaign").value.trim();
    if (campaign) q.set("campaign", campaign);
    const boxes = [...$("channels").querySelectorAll("input[type=checkbox]")];
    const picked = boxes.filter((b) => b.checked).map((b) => b.value);
    if (picked.length && picked.length < boxes.length) picked.forEach((c) => q.append("channel", c));
    return q;
  }

  async function get(path, q) {
    const r = await fetch(path + "?" + q.toString(), {
      headers: { "X-API-Key": sessionStorage.getItem(KEY) || "" }, cache: "no-store" });
    if (r.status === 401 || r.status === 403) throw new AuthError("the API key was refused");
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(body.detail || body.error || "HTTP " + r.status);
    return body;
  }

  function daysBetween(start, end) {
    const out = [];
    for (let d = new Date(start + "T00:00:00Z"); iso(d) <= end; d.setUTCDate(d.getUTCDate() + 1)) {
      out.push(iso(d));
    }
    return out;
  }

  // ------------------------------------------------------------------ drawing
  // Values above bars / at the end of lines: the charts' data labels.
  const valueLabels = {
    id: "valueLabels",
    afterDatasetsDraw(chart, _args, opts) {
      if (!opts || !opts.format) return;
      const { ctx } = chart;
      ctx.save();
      ctx.font = "11px system-ui, sans-serif";
      ctx.fillStyle = "#0f172a";
      ctx.textAlign = "center";
      chart.data.datasets.forEach((ds, i) => {
        const meta = chart.getDatasetMeta(i);
        if (meta.hidden) return;
        meta.data.forEach((el, j) => {
          const v = ds.data[j];
          if (v === null || v === undefined) return;
          ctx.fillText(opts.format(v), el.x, el.y - 4);
        });
      });
      ctx.restore();
    },
  };

  function draw(id, config) {
    if (charts[id]) charts[id].destroy();
    config.options = Object.assign({ animation: false, responsive: true,
                                     maintainAspectRatio: false }, config.options || {});
    config.plugins = [valueLabels];
    charts[id] = new Chart($(id), config);
    const canvas = $(id);
    const points = config.data.datasets.reduce(
      (n, ds) => n + ds.data.filter((v) => v !== null && v !== undefined).length, 0);
    canvas.dataset.points = String(points);
    canvas.dataset.series = String(config.data.datasets.length);
    canvas.dataset.painted = String(painted(canvas));
  }

  // Pixels the chart painted (proof that something was drawn, read by the browser test).
  function painted(canvas) {
    const ctx = canvas.getContext("2d");
    const { data } = ctx.getImageData(0, 0, canvas.width, canvas.height);
    let n = 0;
    for (let i = 3; i < data.length; i += 4) if (data[i] !== 0) n++;
    return n;
  }

  function labelTable(id, head, rows) {
    const t = $(id);
    t.replaceChildren();
    const tr = t.insertRow();
    head.forEach((h) => { const th = document.createElement("th"); th.textContent = h; tr.appendChild(th); });
    rows.forEach((r) => {
      const row = t.insertRow();
      r.forEach((c) => { row.insertCell().textContent = c; });
    });
  }

  // The totals, each with its change from the previous period of the same length: counts and
  // revenue as a relative change, the conversion rate in percentage points.
  function renderTotals(total, before) {
    const ratio = (now, then) => (then ? (now - then) / then : null);
    const tiles = [
      ["Leads", integer.format(total.leads), ratio(total.leads, before.leads), "%"],
      ["Bookings", integer.format(total.bookings), ratio(total.bookings, before.bookings), "%"],
      ["Transactions", integer.format(total.transactions),
       ratio(total.transactions, before.transactions), "%"],
      ["Lead \u2192 transaction", pct(total.conversion.lead_to_transaction),
       total.conversion.lead_to_transaction === null ||
         before.conversion.lead_to_transaction === null ? null
         : total.conversion.lead_to_transaction - before.conversion.lead_to_transaction, "pt"],
      ["Revenue", money(total.revenue.sum), ratio(total.revenue.sum, before.revenue.sum), "%"],
      ["Median lead \u2192 booking", duration(total.lead_to_booking_seconds.median), null, ""]];
    $("totals").replaceChildren(...tiles.map(([label, value, change, unit]) => {
      const div = document.createElement("div");
      div.className = "tile";
      div.innerHTML = '<div class="label"></div><div class="value"></div>';
      div.firstChild.textContent = label;
      div.lastChild.textContent = value;
      if (unit) {
        const delta = document.createElement("div");
        const shown = change === null ? "\u2013" : (change > 0 ? "+" : "") +
          (100 * change).toFixed(1) + (unit === "pt" ? " pt" : "%");
        delta.className = "delta" + (change > 0 ? " up" : change < 0 ? " down" : "");
        delta.textContent = shown;
        div.dataset.delta = shown;
        div.appendChild(delta);
      }
      return div;
    }));
  }

  // The period of the same length just before start..end.
  function previousPeriod(start, end) {
    const days = daysBetween(start, end).length;
    const last = new Date(start + "T00:00:00Z");
    last.setUTCDate(last.getUTCDate() - 1);
    const first = new Date(last);
    first.setUTCDate(first.getUTCDate() - (days - 1));
    return [iso(first), iso(last)];
  }

  // ------------------------------------------------------------------ the lead list
  const LEAD_PAGE = 50;
  let leadCursors = [null];   // the cursor of each page reached (null: the first page)

  // What is on screen: the filters last applied, not the form's unapplied edits.
  const shown = () => new URLSearchParams(loaded.q);

  async function loadLeads(index) {
    const q = shown();
    q.set("limit", String(LEAD_PAGE));
    q.set("summary", "false");
    if (leadCursors[index]) q.set("cursor", leadCursors[index]);
    const page = await get("funnel-report", q);
    leadCursors = leadCursors.slice(0, index + 1);
    if (page.next_cursor) leadCursors.push(page.next_cursor);
    const body = $("leads").tBodies[0];
    body.replaceChildren();
    page.rows.forEach((row) => {
      const tr = body.insertRow();
      tr.dataset.lead = row.lead_id;
      [row.leads_date, row.channel, row.phone || "\u2013", row.booking_date || "\u2013",
       row.transaction_date || "\u2013", money(row.transaction_value), null,
       row.medium || "\u2013",
      ].forEach((v) => { tr.insertCell().textContent = v; });
      campaignCell(tr.cells[6], row.campaign, row.campaign_name, row.campaign_id);
    });
    const first = index * LEAD_PAGE;
    const total = loaded.page.summary.total.leads;
    $("leads-page").textContent = page.rows.length
      ? `${integer.format(first + 1)}\u2013${integer.format(first + page.rows.length)} of ` +
        integer.format(total) : "no leads";
    $("leads").dataset.page = String(index);
    $("leads-prev").disabled = index === 0;
    $("leads-next").disabled = !page.next_cursor;
  }

  // Runs one of the page's actions: what fails is said in the status line (a refused key
  // asks for the key again).
  function act(what, action) {
    action().catch((err) => {
      if (err instanceof AuthError) return showLogin(err.message);
      $("status").textContent = `Could not ${what}: ${err.message}`;
    });
  }

  // The whole filtered report as CSV (the API streams it), saved under the API's file name.
  async function downloadCsv() {
    const q = shown();
    q.set("format", "csv");
    const r = await fetch("funnel-report?" + q.toString(), {
      headers: { "X-API-Key": sessionStorage.getItem(KEY) || "" }, cache: "no-store" });
    if (r.status === 401 || r.status === 403) throw new AuthError("the API key was refused");
    if (!r.ok) throw new Error("HTTP " + r.status);
    const named = (r.headers.get("Content-Disposition") || "").match(/filename="([^"]+)"/);
    const a = document.createElement("a");
    a.href = URL.createObjectURL(await r.blob());
    a.download = named ? named[1] : "funnel_report.csv";
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 60000);
  }

  // [name, figures] of each channel, then of all channels.
  const groupsOf = (summary) => [...summary.by_channel.map((c) => [c.channel, c]),
                                 ["All channels", summary.total]];

  // [name, figures, campaign] triples (the last one the total) as rows of table `id`:
  // `cells(figures)` gives a row's cells after the name, each a text or [text, class]. A
  // campaign group (`campaign`: {name}) shows its name, or its key marked unknown.
  function groupRows(id, groups, cells) {
    const body = $(id).tBodies[0];
    body.replaceChildren();
    groups.forEach(([name, f, campaign], i) => {
      const tr = body.insertRow();
      tr.dataset.channel = name;
      if (i === groups.length - 1) tr.className = "total";
      [name, ...cells(f)].forEach((cell) => {
        const [v, cls] = Array.isArray(cell) ? cell : [cell];
        const td = tr.insertCell();
        td.textContent = v;
        if (cls) td.className = cls;
      });
      if (campaign) campaignCell(tr.cells[0], name, campaign.name);
    });
  }

  // A campaign as people read it: its name (the key in the tooltip), or, for a key no payload
  // or import named, the key itself marked "unknown" (never left out).
  function campaignCell(td, key, name, raw) {
    td.replaceChildren();
    if (!key) { td.textContent = "\u2013"; return; }
    td.textContent = name || key;
    td.title = [key, raw && raw !== key ? "id " + raw : ""].filter(Boolean).join(", ");
    if (!name) {
      const mark = document.createElement("span");
      mark.className = "unknown";
      mark.textContent = "unknown";
      td.append(" ", mark);
    }
  }
  const campaignLabel = (key, name) => name || key + " (unknown)";

  function renderSummary(summary) {
    groupRows("summary", groupsOf(summary), (f) => [
      integer.format(f.leads), integer.format(f.bookings), integer.format(f.transactions),
      pct(f.conversion.lead_to_booking), pct(f.conversion.booking_to_transaction),
      pct(f.conversion.lead_to_transaction), money(f.revenue.sum), money(f.revenue.average),
      duration(f.lead_to_booking_seconds.median) + " / " + duration(f.lead_to_booking_seconds.p90),
      duration(f.lead_to_transaction_seconds.median) + " / " +
        duration(f.lead_to_transaction_seconds.p90)]);
  }

  function renderChannels(summary) {
    const channels = summary.by_channel.map((c) => c.channel);
    draw("chart-channels", {
      type: "bar",
      data: { labels: channels, datasets: STEPS.map(([k, label, color]) => ({
        label, backgroundColor: color,
        data: summary.by_channel.map((c) => c.conversion[k] === null ? null
                                            : +(c.conversion[k] * 100).toFixed(1)) })) },
      options: { scales: { y: { beginAtZero: true, suggestedMax: 100,
                                ticks: { callback: (v) => v + "%" } } },
                 plugins: { valueLabels: { format: (v) => v.toFixed(1) + "%" } } },
    });
    labelTable("labels-channels", ["channel", ...STEPS.map((s) => s[1])],
               summary.by_channel.map((c) => [c.channel, ...STEPS.map(([k]) => pct(c.conversion[k]))]));
  }

  // The step funnel: each group's leads, bookings and transactions side by side, with the
  // drop-off and conversion of each step in the table under it. The groups are the channels,
  // or the values of the dimension chosen in the "by" selector (GET funnel-report/breakdown).
  const BY_NAMES = { channel: ["Channel", "channels"], medium: ["Medium", "media"],
                     campaign: ["Campaign", "campaigns"], ad: ["Ad", "ads"],
                     opening_keyword: ["Opening keyword", "opening keywords"] };

  async function renderSteps() {
    const by = $("breakdown").value;
    const total = loaded.page.summary.total;
    let groups = groupsOf(loaded.page.summary);
    let note = "";
    if (by !== "channel") {
      const q = shown();
      q.set("by", by);
      const found = await get("funnel-report/breakdown", q);
      groups = [...found.groups.map((g) => [g.value === null ? "(none)" : g.value, g,
                                            by === "campaign" && g.value !== null ? g : null]),
                ["All leads", total]];
      if (found.omitted_groups) {
        note = `The ${found.groups.length} ${BY_NAMES[by][1]} with the most leads; ` +
          `${integer.format(found.omitted_groups)} more hold ` +
          `${integer.format(found.omitted_leads)} leads.`;
      }
    }
    $("steps-by").textContent = BY_NAMES[by][0];
    $("steps-note").textContent = note;
    $("steps-note").hidden = !note;
    draw("chart-steps", {
      type: "bar",
      data: { labels: groups.map(([name, , campaign]) => (
                campaign ? campaignLabel(name, campaign.name) : name)),
              datasets: COUNTS.map(([k, label, color]) => ({
        label, backgroundColor: color, data: groups.map(([, f]) => f[k]) })) },
      options: { scales: { y: { beginAtZero: true } },
                 plugins: { valueLabels: { format: (v) => integer.format(v) } } },
    });
    const drop = (from, to) => [from ? integer.format(from - to) + " (" +
      pct((from - to) / from) + ")" : "\u2013", "drop"];
    groupRows("steps", groups, (f) => [
      integer.format(f.leads), integer.format(f.bookings), drop(f.leads, f.bookings),
      pct(f.conversion.lead_to_booking), integer.format(f.transactions),
      drop(f.bookings, f.transactions), pct(f.conversion.booking_to_transaction),
      pct(f.conversion.lead_to_transaction)]);
    $("steps").dataset.by = by;
  }

  // The time-to-convert distributions: each bucket's share of the leads that reached the stage
  // (the label table also gives the counts and the cumulative share).
  function renderDurations(found) {
    const short = (s) => (s < 3600 ? s / 60 + "m" : s < 86400 ? s / 3600 + "h" : s / 86400 + "d");
    const b = found.bounds_seconds;
    const labels = [`< ${short(b[0])}`,
                    ...b.slice(1).map((x, i) => `${short(b[i])}\u2013${short(x)}`),
                    `\u2265 ${short(b[b.length - 1])}`];
    const stages = [["lead_to_booking", "Lead \u2192 booking", "#60a5fa"],
                    ["lead_to_transaction", "Lead \u2192 transaction", "#1d4ed8"]];
    const share = (counts) => {
      const n = counts.reduce((a, c) => a + c, 0);
      return counts.map((c) => (n ? +(100 * c / n).toFixed(1) : null));
    };
    draw("chart-durations", {
      type: "bar",
      data: { labels, datasets: stages.map(([k, label, color]) => ({
        label, backgroundColor: color, data: share(found[k]) })) },
      options: { scales: { y: { beginAtZero: true, ticks: { callback: (v) => v + "%" } } } },
    });
    const rows = [];
    stages.forEach(([k, label]) => {
      const n = found[k].reduce((a, c) => a + c, 0);
      let sum = 0;
      found[k].forEach((c, i) => {
        sum += c;
        rows.push([label, labels[i], integer.format(c), pct(n ? c / n : null),
                   pct(n ? sum / n : null)]);
      });
    });
    labelTable("labels-durations", ["stage", "time since the lead", "leads", "share",
                                    "cumulative"], rows);
  }

  // Monday of the ISO week of a date.
  function weekOf(day) {
    const d = new Date(day + "T00:00:00Z");
    d.setUTCDate(d.getUTCDate() - (d.getUTCDay() + 6) % 7);
    return iso(d);
  }

  // The last lead date whose conversion can be taken as final: lead dates after it are younger
  // than the selection's p90 lead -> transaction time, so most of their payments may still come.
  function finalUntil(total) {
    const p90 = total.lead_to_transaction_seconds.p90;
    if (!today || p90 === null || p90 === undefined) return null;
    const d = new Date(today + "T00:00:00Z");
    d.setUTCDate(d.getUTCDate() - Math.ceil(p90 / 86400));
    return iso(d);
  }

  function renderOverTime() {
    const { daily, start, end, page } = loaded;
    const week = $("period").value === "week";
    const bucket = week ? weekOf : (d) => d;
    document.querySelectorAll(".period-name").forEach((e) => {
      e.textContent = week ? "week (Monday)" : "date"; });
    const labels = [...new Set(daysBetween(start, end).map(bucket))];
    const channels = [...new Set(daily.days.map((d) => d.channel))].sort();
    const at = {};
    daily.days.forEach((d) => {
      const k = bucket(d.leads_date) + "|" + d.channel;
      const b = at[k] || (at[k] = { period: bucket(d.leads_date), channel: d.channel, leads: 0,
                                    transactions: 0, last: d.leads_date });
      b.leads += d.leads;
      b.transactions += d.transactions;
      if (d.leads_date > b.last) b.last = d.leads_date;
    });
    const until = finalUntil(page.summary.total);
    const young = (b) => until !== null && b.last > until;
    const rate = (b) => (b.leads ? +(100 * b.transactions / b.leads).toFixed(1) : null);
    const colour = colours(channels);
    const series = (fn, line) => channels.map((c) => {
      const cells = labels.map((l) => at[l + "|" + c]);
      const ds = { label: c, borderColor: colour[c], backgroundColor: colour[c],
                   data: cells.map((b) => (b ? fn(b) : null)) };
      if (line) {  // a young cohort: hollow point, dashed line into it
        ds.pointBackgroundColor = cells.map((b) => (b && young(b) ? "#fff" : colour[c]));
        ds.pointRadius = 3;
        ds.segment = { borderDash: (ctx) => {
          const b = cells[ctx.p1DataIndex];
          return b && young(b) ? [6, 4] : undefined; } };
      }
      return ds;
    });
    draw("chart-days", {
      type: "line",
      data: { labels, datasets: series(rate, true) },
      options: { spanGaps: true, scales: { y: { beginAtZero: true,
                                                ticks: { callback: (v) => v + "%" } } } },
    });
    draw("chart-leads", {
      type: "bar",
      data: { labels, datasets: series((b) => b.leads, false) },
      options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } },
    });
    const cells = Object.values(at).sort((a, b) => (a.period + a.channel).localeCompare(
      b.period + b.channel));
    $("chart-days").dataset.young = String(cells.filter(young).length);
    const note = $("young-note");
    note.hidden = !cells.some(young);
    note.textContent = until === null ? "" : `Lead dates after ${until} are younger than the ` +
      `p90 lead \u2192 transaction time (${duration(page.summary.total.lead_to_transaction_seconds.p90)}` +
      `): their conversion is not final yet (hollow points, dashed lines).`;
    const rows = cells.map((b) => [b.period, b.channel, String(b.leads),
                                   pct(b.leads ? b.transactions / b.leads : null),
                                   young(b) ? "not final" : "final"]);
    const first = week ? "week of" : "lead date";
    labelTable("labels-days", [first, "channel", "leads", "lead \u2192 transaction",
                               "conversion"], rows);
    labelTable("labels-leads", [first, "channel", "leads"], rows.map((r) => r.slice(0, 3)));
  }

  function renderChannelPicker(summary) {
    if (knownChannels) return;
    knownChannels = summary.by_channel.map((c) => c.channel);
    const box = $("channels");
    knownChannels.forEach((c) => {
      const label = document.createElement("label");
      const input = document.createElement("input");
      input.type = "checkbox";
      input.value = c;
      input.checked = true;
      label.append(input, " " + c);
      box.appendChild(label);
    });
  }

  // The campaign filter's suggestions: every campaign's key, labelled with its name (GET
  // campaigns, once). The filter takes a key or a raw campaign id; without the list it still
  // works, so a failure here only leaves the suggestions out.
  let campaignsListed = false;
  async function renderCampaignPicker() {
    if (campaignsListed) return;
    campaignsListed = true;
    try {
      const found = await get("campaigns", new URLSearchParams([["limit", "1000"]]));
      $("campaign-list").replaceChildren(...found.campaigns.map((c) => {
        const option = document.createElement("option");
        option.value = c.campaign;
        option.label = campaignLabel(c.campaign, c.name);
        return option;
      }));
    } catch (err) {
      if (err instanceof AuthError) throw err;
      campaignsListed = false;
    }
  }

  async function load() {
    if (!sessionStorage.getItem(KEY)) return showLogin();
    document.body.dataset.state = "loading";
    $("status").textContent = "Loading\u2026";
    const q = query();
    const [beforeStart, beforeEnd] = previousPeriod(q.get("start"), q.get("end"));
    const before = new URLSearchParams([...q, ["limit", "1"]]);
    before.set("start", beforeStart);
    before.set("end", beforeEnd);
    try {
      const [page, daily, previous, durations] = await Promise.all([
        get("funnel-report", new URLSearchParams([...q, ["limit", "1"]])),
        get("funnel-report/daily", new URLSearchParams([...q, ["times", "false"]])),
        get("funnel-report", before),
        get("funnel-report/durations", q)]);
      $("login").hidden = true;
      $("content").hidden = false;
      $("forget").hidden = false;
      renderChannelPicker(page.summary);
      renderTotals(page.summary.total, previous.summary.total);
      $("compared").textContent = `Changes against the ${daysBetween(q.get("start"),
        q.get("end")).length} days before: ${beforeStart} to ${beforeEnd}.`;
      renderSummary(page.summary);
      renderChannels(page.summary);
      loaded = { page, daily, q, start: q.get("start"), end: q.get("end") };
      renderOverTime();
      renderDurations(durations);
      leadCursors = [null];
      await Promise.all([renderSteps(), loadLeads(0), renderCampaignPicker()]);
      $("status").textContent = `${integer.format(page.summary.total.leads)} leads, lead dates ` +
        `${q.get("start")} to ${q.get("end")} (${page.filters.timezone}; today ${today})`;
      document.body.dataset.state = "ready";
    } catch (err) {
      if (err instanceof AuthError) return showLogin(err.message);
      $("status").textContent = "Could not load the report: " + err.message;
      document.body.dataset.state = "error";
    }
  }

  async function init() {
    keyFromFragment();
    try {  // today in FUNNEL_TIMEZONE, not the browser's UTC date
      const r = await fetch("dashboard/settings", { cache: "no-store" });
      if (r.ok) today = (await r.json()).today;
    } catch (err) { /* the API answers below, or says why not */ }
    today = today || iso(new Date());
    const url = new URLSearchParams(location.search);
    if (url.get("per") === "week") $("period").value = "week";
    if (url.get("by") in BY_NAMES) $("breakdown").value = url.get("by");
    const end = url.get("end") || today;
    const start = url.get("start") ||
      iso(new Date(new Date(end + "T00:00:00Z").getTime() - 29 * 86400000));
    $("start").value = start;
    $("end").value = end;
    $("campaign").value = url.get("campaign") || "";
    $("filters").addEventListener("submit", (e) => { e.preventDefault(); load(); });
    $("period").addEventListener("change", () => { if (loaded) renderOverTime(); });
    const leadPage = (step) => () => act("load the leads",
                                         () => loadLeads(Number($("leads").dataset.page) + step));
    $("leads-prev").addEventListener("click", leadPage(-1));
    $("leads-next").addEventListener("click", leadPage(1));
    $("breakdown").addEventListener("change", () => {
      if (loaded) act("load the breakdown", renderSteps); });
    $("csv").addEventListener("click", () => { if (loaded) act("download the CSV", downloadCsv); });
    $("login-form").addEventListener("submit", (e) => {
      e.preventDefault();
      sessionStorage.setItem(KEY, $("key").value);
      $("key").value = "";
      load();
    });
    $("forget").addEventListener("click", () => showLogin());
    load();
  }

  init();
})();
