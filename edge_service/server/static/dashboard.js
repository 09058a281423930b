/* edge-service operator dashboard.
 *
 * Plain JS, no build step, no library, no external resource. Data comes from two places:
 *   GET v1/status  once at load, on every (re)connect and every 10 s: family, device, the
 *                  variants, the policy, uptime, and the last adaptation events;
 *   GET v1/events  Server-Sent Events: `adaptation` events (replayed on connect, then live)
 *                  and one `context` event per monitor tick (~2/s) that drives the cards and
 *                  the charts;
 *   GET v1/streams every few seconds: the camera streams (a detection family's count what
 *                  was detected per class).
 * At most HISTORY_S seconds of samples are kept, so a tab left open for days stays small.
 */
(() => {
  "use strict";

  const HISTORY_S = 600;          // keep 10 minutes of samples
  const MAX_SAMPLES = 3000;       // and never more than this many (5 ticks/s for 10 min)
  const MAX_EVENTS = 200;         // rows in the event log
  const STALE_AFTER_S = 5;        // connected but no tick for this long: say so
  const STATUS_EVERY_MS = 10000;
  const STREAMS_EVERY_MS = 3000;
  const MAX_CLASS_CHIPS = 8;      // per stream; the rest are named on hover
  // What a variant's `accuracy` measures (the catalog's accuracy.metric): [column, inline].
  const METRICS = {
    top1: ["Top-1", "top-1"],
    map50: ["mAP@50", "mAP@50"],
    agreement_map50: ["Agree. mAP@50", "agreement mAP@50"],
  };
  const METRIC_NOTES = {
    agreement_map50: "mAP@50 against the family's reference (its largest FP32 engine) on " +
      "unlabelled frames: agreement, not accuracy on labels",
  };  const RETRY_MS = [1000, 2000, 5000, 10000]; // when the browser gave up reconnecting itself
  const INPUT_RAILS = ["VDD_IN", "POM_5V_IN"]; // a whole module's input (see Context.power_total_mw)
  // Distinct on light and dark panels; the total power line keeps amber for itself.
  const PALETTE = ["#e4572e", "#2563eb", "#16a34a", "#7c3aed", "#0891b2", "#db2777", "#65a30d",
    "#64748b", "#d97706", "#a16207"];

  const $ = (id) => document.getElementById(id);

  const state = {
    samples: [],            // one per context event, oldest first
    events: [],             // adaptation events, oldest first
    seen: new Set(),        // their keys: the stream replays recent events on every connect
    variants: new Map(),    // id -> {precision, backend, accuracy, latency_p50_ms, status, ...}
    metric: null,           // the family's accuracy metric (top1, map50, ...), null if unsaid
    active: null,
    windowS: 300,
    offsetS: 0,             // server clock minus this tab's clock, from the last tick
    lastTickAt: 0,          // this tab's clock when the last context event arrived
    uptime: null,           // {seconds, at}
    conn: "connecting",
    ticks: null,            // from the last status, counted on with each context event
    sourceErrors: null,
    source: null,
    retry: 0,
  };

  // ---- formatting ------------------------------------------------------------------------

  const finite = (v) => typeof v === "number" && Number.isFinite(v);
  const num = (v, digits = 0) => (finite(v)
    ? v.toLocaleString(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits })
    : "—");
  const msText = (v) => (!finite(v) ? "—" : num(v, v < 10 ? 2 : v < 100 ? 1 : 0));
  const mbText = (v) => (!finite(v) ? "—" : v >= 1024 ? `${num(v / 1024, 1)} GB` : `${num(v)} MB`);
  const budgetText = (v) => (Number.isInteger(v) ? num(v) : msText(v));
  const clock = (t) => new Date(t * 1000).toLocaleTimeString([], { hour12: false });
  const shortClock = (t) => new Date(t * 1000).toLocaleTimeString([], {
    hour12: false, hour: "2-digit", minute: "2-digit",
  });
  const duration = (s) => {
    if (!finite(s)) return "";
    const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
    if (d) return `${d}d ${h}h`;
    if (h) return `${h}h ${m}m`;
    return m ? `${m}m ${Math.floor(s % 60)}s` : `${Math.floor(s)}s`;
  };
  const serverNow = () => Date.now() / 1000 + state.offsetS;

  function setText(id, text) {
    const el = $(id);
    if (el && el.textContent !== text) el.textContent = text;
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function chip(id, text, kind) {
    const node = $(id);
    node.textContent = text;
    node.className = kind ? `chip ${kind}` : "chip";
  }

  // ---- charts ----------------------------------------------------------------------------

  function niceStep(span, count) {
    const raw = span / count;
    const mag = 10 ** Math.floor(Math.log10(raw));
    const n = raw / mag;
    return (n <= 1 ? 1 : n <= 2 ? 2 : n <= 5 ? 5 : 10) * mag;
  }

  /** A time-series chart on a <canvas>: lines over the sample window, an optional dashed
   *  reference line (the budget), vertical markers, a legend and a hover read-out. */
  class TimeChart {
    constructor(id, opts) {
      this.root = $(id);
      this.canvas = this.root.querySelector("canvas");
      this.legendEl = this.root.querySelector(".legend");
      this.opts = Object.assign({ zero: true, fixed: null, fmt: (v) => num(v), unit: "",
        reference: () => null, empty: () => "waiting for data", markers: () => [] }, opts);
      this.legendKey = "";
      this.hoverX = null;
      this.tip = el("div", "tooltip");
      this.tip.hidden = true;
      this.root.appendChild(this.tip);
      this.canvas.addEventListener("mousemove", (e) => { this.hoverX = e.offsetX; scheduleDraw(); });
      this.canvas.addEventListener("mouseleave", () => { this.hoverX = null; scheduleDraw(); });
    }

    /** The visible lines: [{name, color, width, dash, get(sample) -> number|null}]. */
    lines(samples) { return this.opts.series(samples); }

    draw(samples, t0, t1) {
      const canvas = this.canvas;
      const w = canvas.clientWidth, h = canvas.clientHeight;
      if (!w || !h) return;
      const dpr = window.devicePixelRatio || 1;
      if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
        canvas.width = Math.round(w * dpr);
        canvas.height = Math.round(h * dpr);
      }
      const ctx = canvas.getContext("2d");
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.clearRect(0, 0, w, h);
      const css = getComputedStyle(document.documentElement);
      const colors = { grid: css.getPropertyValue("--grid").trim(), text: css.getPropertyValue("--muted").trim(),
        faint: css.getPropertyValue("--faint").trim(), bad: css.getPropertyValue("--bad").trim(),
        panel: css.getPropertyValue("--panel").trim() };
      ctx.font = "11px " + css.getPropertyValue("--sans");

      const visible = samples.filter((s) => s.t >= t0 && s.t <= t1 + 1);
      const lines = this.lines(samples);
      const ref = this.opts.reference(samples);
      let lo = Infinity, hi = -Infinity, points = 0;
      for (const line of lines) {
        for (const s of visible) {
          const v = line.get(s);
          if (!finite(v)) continue;
          lo = Math.min(lo, v); hi = Math.max(hi, v); points += 1;
        }
      }
      this.root.dataset.points = String(points);
      const empty = points ? "" : this.opts.empty(samples);
      if (this.root.dataset.empty !== empty) this.root.dataset.empty = empty; // what the canvas says
      this.updateLegend(lines, samples);

      if (!points) {
        this.tip.hidden = true;
        ctx.fillStyle = colors.text;
        ctx.textAlign = "center";
        ctx.textBaseline = "middle";
        ctx.font = "13px " + css.getPropertyValue("--sans");
        ctx.fillText(empty, w / 2, h / 2);
        return;
      }
      if (finite(ref)) { hi = Math.max(hi, ref); lo = Math.min(lo, ref); }
      let [yMin, yMax] = this.opts.fixed || [this.opts.zero ? 0 : lo, hi];
      const span = Math.max(yMax - yMin, this.opts.minSpan || Math.abs(yMax) * 0.1 || 1);
      const step = niceStep(span, 4);
      if (!this.opts.fixed) {
        yMin = this.opts.zero ? 0 : Math.floor((yMin - span * 0.08) / step) * step;
        yMax = Math.ceil((yMax + span * 0.08) / step) * step;
        if (!this.opts.zero && lo >= 0) yMin = Math.max(0, yMin);
      }
      const ticks = [];
      for (let v = yMin; v <= yMax + step / 1e6; v += step) ticks.push(v);
      const decimals = Math.max(0, Math.ceil(-Math.log10(step) - 1e-9)); // same on every tick
      const labels = ticks.map((v) => num(v, decimals));
      const left = Math.ceil(Math.max(...labels.map((s) => ctx.measureText(s).width))) + 12;
      const plot = { x: left, y: 14, w: w - left - 10, h: h - 14 - 22 };
      const X = (t) => plot.x + ((t - t0) / (t1 - t0)) * plot.w;
      const Y = (v) => plot.y + plot.h - ((v - yMin) / (yMax - yMin)) * plot.h;

      // grid and y labels
      ctx.strokeStyle = colors.grid; ctx.lineWidth = 1; ctx.fillStyle = colors.text;
      ctx.textAlign = "right"; ctx.textBaseline = "middle";
      ticks.forEach((v, i) => {
        const y = Math.round(Y(v)) + 0.5;
        ctx.beginPath(); ctx.moveTo(plot.x, y); ctx.lineTo(plot.x + plot.w, y); ctx.stroke();
        ctx.fillText(labels[i], plot.x - 7, y);
      });
      // x labels: clock time at a round step that leaves ~90 px between labels
      const xStep = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600].find((s) => ((t1 - t0) / s) * 90 <= plot.w) || 600;
      ctx.textAlign = "center"; ctx.textBaseline = "top";
      for (let t = Math.ceil(t0 / xStep) * xStep; t <= t1; t += xStep) {
        const x = X(t);
        if (x < plot.x + 18 || x > plot.x + plot.w - 18) continue;
        ctx.fillText(xStep >= 60 ? shortClock(t) : clock(t), x, plot.y + plot.h + 7);
      }
      this.drawMarkers(ctx, colors, plot, X, t0, t1);
      if (finite(ref)) {
        const y = Math.round(Y(ref)) + 0.5;
        ctx.save();
        ctx.strokeStyle = colors.bad; ctx.lineWidth = 1.5; ctx.setLineDash([6, 4]);
        ctx.beginPath(); ctx.moveTo(plot.x, y); ctx.lineTo(plot.x + plot.w, y); ctx.stroke();
        const label = `budget ${budgetText(ref)}${this.opts.unit}`;
        const lw = ctx.measureText(label).width;
        ctx.fillStyle = colors.panel;
        ctx.fillRect(plot.x + plot.w - lw - 10, y - 17, lw + 8, 15);
        ctx.fillStyle = colors.bad; ctx.textAlign = "right"; ctx.textBaseline = "bottom";
        ctx.fillText(label, plot.x + plot.w - 6, y - 4);
        ctx.restore();
      }
      ctx.save();
      ctx.beginPath(); ctx.rect(plot.x, plot.y - 4, plot.w + 4, plot.h + 8); ctx.clip();
      for (const line of lines) this.drawLine(ctx, line, visible, X, Y, plot.w);
      ctx.restore();
      this.drawHover(ctx, colors, plot, lines, visible, X, Y);
    }

    drawMarkers(ctx, colors, plot, X, t0, t1) {
      ctx.save();
      ctx.textAlign = "left"; ctx.textBaseline = "top";
      for (const m of this.opts.markers()) {
        if (m.t < t0 || m.t > t1) continue;
        const x = Math.round(X(m.t)) + 0.5;
        ctx.strokeStyle = m.color || colors.faint; ctx.fillStyle = m.color || colors.faint;
        ctx.setLineDash(m.label ? [3, 3] : []);
        ctx.globalAlpha = m.label ? 0.9 : 0.55;
        ctx.beginPath(); ctx.moveTo(x, plot.y - 2); ctx.lineTo(x, plot.y + plot.h); ctx.stroke();
        if (m.label) ctx.fillText(m.label, Math.min(x + 4, plot.x + plot.w - ctx.measureText(m.label).width), plot.y - 13);
        else { ctx.beginPath(); ctx.moveTo(x - 4, plot.y - 6); ctx.lineTo(x + 4, plot.y - 6); ctx.lineTo(x, plot.y); ctx.fill(); }
      }
      ctx.restore();
    }

    /** One series as a line, broken where a value is missing. With more samples than pixel
     *  columns, each column is drawn as its min..max, so a spike stays visible. */
    drawLine(ctx, line, visible, X, Y, plotW) {
      ctx.strokeStyle = line.color; ctx.lineWidth = line.width || 2;
      ctx.lineJoin = "round"; ctx.lineCap = "round";
      ctx.setLineDash(line.dash || []);
      ctx.beginPath();
      const dense = visible.length > plotW * 1.5;
      let open = false, last = null, col = NaN, lo = 0, hi = 0;
      const point = (x, v) => {
        if (open) ctx.lineTo(x, Y(v)); else ctx.moveTo(x, Y(v));
        open = true;
      };
      const flush = () => {
        if (!Number.isNaN(col)) { point(col, hi); if (lo !== hi) point(col, lo); }
        col = NaN;
      };
      for (const s of visible) {
        const v = line.get(s);
        if (!finite(v)) { flush(); open = false; continue; }
        const x = X(s.t);
        last = [x, Y(v)];
        if (!dense) { point(x, v); continue; }
        const c = Math.round(x);
        if (c !== col) { flush(); col = c; lo = hi = v; } else { lo = Math.min(lo, v); hi = Math.max(hi, v); }
      }
      flush();
      ctx.stroke();
      ctx.setLineDash([]);
      if (last && !line.thin) {
        ctx.fillStyle = line.color;
        ctx.beginPath(); ctx.arc(last[0], last[1], 3, 0, Math.PI * 2); ctx.fill();
      }
    }

    drawHover(ctx, colors, plot, lines, visible, X, Y) {
      if (this.hoverX === null || this.hoverX < plot.x || !visible.length) { this.tip.hidden = true; return; }
      let best = visible[0];
      for (const s of visible) if (Math.abs(X(s.t) - this.hoverX) < Math.abs(X(best.t) - this.hoverX)) best = s;
      const x = Math.round(X(best.t)) + 0.5;
      ctx.strokeStyle = colors.faint; ctx.lineWidth = 1; ctx.setLineDash([]);
      ctx.beginPath(); ctx.moveTo(x, plot.y); ctx.lineTo(x, plot.y + plot.h); ctx.stroke();
      this.tip.replaceChildren(el("div", "t", clock(best.t)));
      for (const line of lines) {
        const v = line.get(best);
        if (!finite(v)) continue;
        ctx.fillStyle = line.color;
        ctx.beginPath(); ctx.arc(x, Y(v), 3.5, 0, Math.PI * 2); ctx.fill();
        const row = el("div", "row");
        const sw = el("span", "swatch"); sw.style.background = line.color;
        sw.style.width = "10px"; sw.style.height = "3px";
        row.append(sw, el("span", "", line.name), el("b", "", this.opts.fmt(v) + this.opts.unit));
        this.tip.appendChild(row);
      }
      this.tip.hidden = false;
      const left = x + 14 + this.tip.offsetWidth > plot.x + plot.w ? x - 14 - this.tip.offsetWidth : x + 14;
      this.tip.style.left = `${left}px`;
      this.tip.style.top = `${plot.y + 4}px`;
    }

    updateLegend(lines, samples) {
      const key = lines.map((l) => l.name).join("\u0000");
      if (key !== this.legendKey) {
        this.legendKey = key;
        this.legendEl.replaceChildren(...lines.map((line) => {
          const li = el("li");
          const sw = el("span", line.dash ? "swatch dashed" : "swatch");
          if (line.dash) sw.style.borderColor = line.color; else sw.style.background = line.color;
          li.append(sw, el("span", "", line.name), el("b"));
          return li;
        }));
      }
      const latest = samples[samples.length - 1];
      lines.forEach((line, i) => {
        const v = latest ? line.get(latest) : null;
        const b = this.legendEl.children[i].querySelector("b");
        b.textContent = finite(v) ? this.opts.fmt(v) + this.opts.unit : "—";
      });
    }
  }

  /** Names of the keys of a per-sample mapping (temps_c, power_mw) seen in the kept history. */
  function keysOf(samples, field) {
    const names = new Set();
    for (const s of samples) for (const k of Object.keys(s[field])) names.add(k);
    return [...names].sort();
  }

  const modeMarkers = () => {
    const out = [];
    let prev;
    for (const s of state.samples) {
      const name = s.mode ? s.mode.name : null;
      if (prev !== undefined && name !== prev) out.push({ t: s.t, label: name || "mode ?" });
      prev = name;
    }
    return out;
  };

  const charts = {
    latency: new TimeChart("chart-latency", {
      unit: " ms", fmt: (v) => msText(v),
      series: () => [
        { name: "p99", color: "#e4572e", get: (s) => s.p99 },
        { name: "p50", color: "#2563eb", get: (s) => s.p50 },
      ],
      reference: (samples) => (samples.length ? samples[samples.length - 1].budget : null),
      empty: (samples) => (samples.length ? "no requests yet: POST frames to /v1/infer" : "waiting for data"),
      markers: () => modeMarkers().concat(state.events.map((e) => ({ t: e.t, color: e.error ? "#dc2626" : "#7c3aed" }))),
    }),
    rps: new TimeChart("chart-rps", {
      fmt: (v) => num(v, v < 10 && v % 1 ? 1 : 0),
      series: () => [{ name: "requests/s", color: "#0d9488", get: (s) => s.rps }],
      markers: modeMarkers,
    }),
    power: new TimeChart("chart-power", {
      unit: " mW", fmt: (v) => num(v),
      series: (samples) => [{ name: "total", color: "#d97706", width: 2.5, get: (s) => s.power }].concat(
        keysOf(samples, "rails").filter((r) => !INPUT_RAILS.includes(r)).map((r, i) => ({
          name: r, color: PALETTE[(i + 1) % 8], width: 1.25, thin: true, get: (s) => s.rails[r] ?? null,
        }))),
      empty: (samples) => (samples.length ? "no power rails on this board" : "waiting for data"),
      markers: modeMarkers,
    }),
    temps: new TimeChart("chart-temps", {
      unit: " °C", zero: false, minSpan: 4, fmt: (v) => num(v, 0),
      series: (samples) => keysOf(samples, "temps").map((z, i) => ({
        name: z, color: PALETTE[i % PALETTE.length], width: 1.75, get: (s) => s.temps[z] ?? null,
      })),
      empty: (samples) => (samples.length ? "no thermal zones" : "waiting for data"),
      markers: modeMarkers,
    }),
    cpu: new TimeChart("chart-cpu", {
      unit: " %", fixed: [0, 100], fmt: (v) => num(v),
      series: (samples) => {
        const out = [
          { name: "CPU load", color: "#2563eb", get: (s) => s.cpu },
          { name: "memory in use", color: "#16a34a", get: (s) => s.mem },
        ];
        if (samples.some((s) => finite(s.gpu))) out.push({ name: "GPU load", color: "#7c3aed", get: (s) => s.gpu });
        return out;
      },
      markers: modeMarkers,
    }),
  };

  let drawPending = false;
  function scheduleDraw() {
    if (drawPending) return;
    drawPending = true;
    requestAnimationFrame(() => {
      drawPending = false;
      if (document.hidden) return;
      const t1 = state.samples.length ? Math.max(serverNow(), state.samples[state.samples.length - 1].t) : serverNow();
      // Until the window fills, fit the data (at least 5 s) rather than squeeze it to the right.
      const first = state.samples.length ? state.samples[0].t : t1;
      const t0 = Math.min(t1 - 5, Math.max(t1 - state.windowS, first));
      for (const chart of Object.values(charts)) chart.draw(state.samples, t0, t1);
    });
  }

  // ---- cards -----------------------------------------------------------------------------

  function showPowerMode(mode) {
    if (mode) {
      setText("power-mode", mode.name);
      setText("power-mode-sub", `nvpmodel mode ${mode.id}`);
    } else {
      setText("power-mode", "not reported");
      setText("power-mode-sub", "this board reports no power mode");
    }
    $("power-mode").classList.toggle("quiet", !mode);
  }

  function showVariant(id, precision) {
    state.active = id;
    setText("active-variant", id || "none loaded");
    const v = id ? state.variants.get(id) : null;
    const prec = precision || (v && v.precision) || null;
    chip("active-precision", prec || "—", prec ? `prec-${prec}` : "");
    const parts = [];
    if (v && v.backend) parts.push(v.backend);
    if (v && finite(v.accuracy)) parts.push(`${metricName(metricOf(v), 1)} ${num(v.accuracy * 100, 1)} %`);
    setText("active-sub", parts.join(" · "));
    for (const row of $("variants-body").rows) row.classList.toggle("active", row.dataset.id === id);
  }

  function showLatency(s) {
    setText("lat-p99", msText(s.p99));
    setText("lat-p50", msText(s.p50));
    if (!finite(s.budget)) chip("budget-chip", "no budget", "");
    else if (!finite(s.p99)) chip("budget-chip", `budget ${budgetText(s.budget)} ms`, "");
    else if (s.p99 > s.budget) chip("budget-chip", `over ${budgetText(s.budget)} ms budget`, "bad");
    else chip("budget-chip", `within ${budgetText(s.budget)} ms budget`, "ok");
    const parts = [s.count ? `${num(s.count)} requests in window` : "no requests in window"];
    const slo = s.slo;
    if (slo && finite(slo.calls)) {
      const verdict = { compliant: "SLO kept", over: "SLO broken", undecided: "SLO in doubt" }[slo.verdict] || slo.verdict;
      parts.push(`engine calls over: ${num(slo.over)} of ${num(slo.calls)} in 15 s (${verdict})`);
    }
    setText("budget-sub", parts.join(" · "));
  }

  function showPower(s, ctx) {
    const rails = Object.keys(s.rails);
    const node = $("power-total");
    if (finite(s.power)) {
      node.replaceChildren(document.createTextNode(num(s.power)), el("span", "unit", "mW"));
    } else {
      node.textContent = "no power rails on this board";
    }
    node.classList.toggle("quiet", !finite(s.power));
    const sub = $("power-sub");
    const parts = [];
    const zones = Object.entries(s.temps).filter(([, v]) => finite(v));
    if (zones.length) {
      const [zone, hot] = zones.reduce((a, b) => (b[1] > a[1] ? b : a));
      parts.push(el("span", "", `hottest ${zone} `), el("b", "", `${num(hot, 1)} °C`));
    } else {
      parts.push(el("span", "", "no thermal zones"));
    }
    if (rails.length) parts.push(el("span", "", `· ${rails.length} rail${rails.length > 1 ? "s" : ""}`));
    if (ctx.throttled === true) parts.push(el("span", "chip bad", "throttled"));
    sub.replaceChildren(...parts);
  }

  function showLoad(s, ctx) {
    setText("cpu-load", finite(s.cpu) ? `${num(s.cpu)} %` : "—");
    const cpu = [];
    if (finite(ctx.cpu_online)) cpu.push(el("span", "", `${ctx.cpu_online} core${ctx.cpu_online === 1 ? "" : "s"} online`));
    if (finite(s.gpu)) cpu.push(el("span", "", `GPU ${num(s.gpu)} %`));
    $("cpu-sub").replaceChildren(...cpu);
    setText("mem-available", mbText(ctx.mem_available_mb));
    setText("mem-sub", finite(ctx.mem_total_mb) ? `available of ${mbText(ctx.mem_total_mb)}` : "available");
    const meter = $("mem-meter");
    meter.firstElementChild.style.width = `${finite(s.mem) ? s.mem : 0}%`;
    meter.classList.toggle("hot", finite(s.mem) && s.mem > 90);
  }

  function showRate(s) {
    setText("rps", num(s.rps, finite(s.rps) && s.rps < 100 ? 1 : 0));
    setText("rps-sub", state.samples.length > 1
      ? `peak ${num(Math.max(...state.samples.map((x) => x.rps || 0)), 1)} req/s in history` : "");
  }

  // ---- stream ----------------------------------------------------------------------------

  function sampleOf(m) {
    const ctx = m.context || {};
    const lat = m.latency_ms || {};
    const memTotal = ctx.mem_total_mb, memAvail = ctx.mem_available_mb;
    return {
      t: m.t,
      p50: lat.p50 ?? null,
      p99: lat.p99 ?? null,
      count: lat.count ?? 0,
      budget: m.latency_budget_ms ?? null,
      rps: m.requests_per_s ?? null,
      power: m.power_total_mw ?? null,
      rails: ctx.power_mw || {},
      temps: ctx.temps_c || {},
      cpu: finite(ctx.cpu_load) ? ctx.cpu_load * 100 : null,
      gpu: finite(ctx.gpu_load) ? (ctx.gpu_load <= 1 ? ctx.gpu_load * 100 : ctx.gpu_load) : null,
      mem: finite(memTotal) && memTotal > 0 && finite(memAvail) ? 100 * (1 - memAvail / memTotal) : null,
      mode: m.power_mode || null,
      slo: m.served_slo || null,
    };
  }

  function onContext(m) {
    if (!finite(m.t)) return;
    const now = Date.now() / 1000;
    state.offsetS = m.t - now;
    state.lastTickAt = now;
    const s = sampleOf(m);
    const samples = state.samples;
    if (samples.length && s.t < samples[samples.length - 1].t) samples.length = 0; // server clock went back
    samples.push(s);
    while (samples.length > MAX_SAMPLES || (samples.length && samples[0].t < s.t - HISTORY_S)) samples.shift();
    const ctx = m.context || {};
    resolveModes(s);
    showPowerMode(m.power_mode);
    showVariant(m.active_variant, m.precision);
    showLatency(s);
    showPower(s, ctx);
    showLoad(s, ctx);
    showRate(s);
    if (ctx.source) setText("foot-source", `monitor: ${ctx.source}`);
    setText("foot-updated", `last tick ${clock(m.t)}`);
    if (finite(state.ticks)) state.ticks += 1; // one context event per monitor tick
    showTicks();
    setConn("live");
    scheduleDraw();
  }

  const eventKey = (e) => `${e.t}|${e.from_variant}|${e.to_variant}|${e.reason}`;

  function addEvents(list, live) {
    let added = 0;
    for (const e of list) {
      if (!e || !finite(e.t) || state.seen.has(eventKey(e))) continue;
      state.seen.add(eventKey(e));
      if (e.context && e.context.power_mode) e.modeName = e.context.power_mode.name;
      state.events.push(e);
      added += 1;
    }
    if (!added) return;
    state.events.sort((a, b) => a.t - b.t);
    while (state.events.length > MAX_EVENTS) state.seen.delete(eventKey(state.events.shift()));
    renderEvents(live ? added : 0);
    scheduleDraw();
  }

  const modeCells = new WeakMap(); // event -> its row's Mode cell

  /** The power mode each event was decided in: its own context's when it carries one, else
   *  the first tick at or after it (the tick that drove the decision), else unknown. */
  function resolveModes(s) {
    for (const e of state.events) {
      if (e.modeName !== undefined || s.t + 0.25 < e.t) continue; // that tick is still to come
      e.modeName = s.mode && s.t - e.t < 1.5 ? s.mode.name : null;
      const cell = modeCells.get(e);
      if (cell) cell.textContent = e.modeName || "—";
    }
  }

  function renderEvents(fresh) {
    const rows = state.events.slice().reverse().map((e, i) => {
      const tr = el("tr", "event-row");
      if (e.error) tr.classList.add("error-row");
      if (i < fresh) tr.classList.add("fresh");
      const change = el("td", "mono");
      if (e.kind && e.kind !== "adaptation") { // a board event: the variant stays
        change.append(el("span", "kind", e.kind.replace("_", " ")), el("span", "arrow", "·"),
          el("span", "variant", e.to_variant || "—"));
      } else {
        change.append(el("span", "variant", e.from_variant || "start"), el("span", "arrow", "→"),
          el("span", "variant", e.to_variant));
      }
      const reason = el("td", "", e.reason || "");
      if (e.error) reason.appendChild(el("span", "error", e.error));
      const lat = `${msText(e.predicted_latency_ms)} / ${msText(e.observed_latency_ms)}`;
      const mode = el("td", "optional", e.modeName || "—");
      modeCells.set(e, mode);
      tr.append(el("td", "time", clock(e.t)), change, reason, mode, el("td", "num optional", lat));
      return tr;
    });
    const body = $("events-body");
    if (rows.length) body.replaceChildren(...rows);
    const errors = state.events.filter((e) => e.error).length;
    setText("events-note", `${state.events.length} event${state.events.length === 1 ? "" : "s"}`
      + (errors ? `, ${errors} failed` : "") + " · newest first");
  }

  function setConn(next) {
    state.conn = next;
    const quiet = state.lastTickAt ? Date.now() / 1000 - state.lastTickAt : 0;
    const shown = next === "live" && quiet > STALE_AFTER_S ? "stale" : next;
    const node = $("conn");
    if (node.dataset.state !== shown) {
      node.dataset.state = shown;
      document.body.dataset.conn = shown; // the style sheet dims the last values when not live
    }
    setText("conn-text", shown === "stale" ? `no data for ${Math.round(quiet)} s` : shown);
  }

  function connect() {
    setConn(state.lastTickAt ? "reconnecting" : "connecting");
    const source = new EventSource("v1/events");
    state.source = source;
    source.addEventListener("open", () => {
      state.retry = 0;
      setConn("live");
      refreshStatus();
    });
    source.addEventListener("context", (e) => handle(e, onContext));
    source.addEventListener("adaptation", (e) => handle(e, (m) => addEvents([m], true)));
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) {
        // The browser gives up by itself on a non-200 answer (an older server without the
        // stream, a proxy error page): retry with a back-off.
        source.close();
        setConn("reconnecting");
        const delay = RETRY_MS[Math.min(state.retry, RETRY_MS.length - 1)];
        state.retry += 1;
        setTimeout(connect, delay);
      } else {
        setConn("reconnecting"); // EventSource is already reconnecting on its own
      }
    });
  }

  function handle(e, fn) {
    let m;
    try {
      m = JSON.parse(e.data);
    } catch (err) {
      console.warn("dashboard: a %s event that is not JSON was skipped", e.type, err);
      return;
    }
    fn(m);
  }

  function showTicks() {
    if (finite(state.ticks)) {
      setText("foot-ticks", `${num(state.ticks)} monitor ticks · ${num(state.sourceErrors)} source errors`);
    }
  }

  // ---- status ----------------------------------------------------------------------------

  async function refreshStatus() {
    let st;
    try {
      const r = await fetch("v1/status?events=100", { cache: "no-store" });
      if (!r.ok) return; // 503 while starting: the stream and the next refresh will tell
      st = await r.json();
    } catch (err) {
      return; // the connection indicator already says the server is unreachable
    }
    applyStatus(st);
  }

  function applyStatus(st) {
    setText("family", st.family || "?");
    setText("device", st.device_name || st.device || "?");
    document.getElementById("device").title = st.device ? `device id ${st.device}` : "";
    showBuild(st.build);
    document.title = `${st.family || "edge-service"} · edge-service dashboard`;
    if (finite(st.uptime_s)) state.uptime = { seconds: st.uptime_s, at: Date.now() / 1000 };
    state.ticks = st.ticks;
    state.sourceErrors = st.source_errors;
    showTicks();
    renderVariants(st.variants || []);
    renderPolicy(st.policy);
    if (!state.samples.length) {
      // Before the first tick, show what the status already knows.
      const ctx = st.context || {};
      showPowerMode(st.power_mode !== undefined ? st.power_mode : ctx.power_mode || null);
      if (ctx.source) setText("foot-source", `monitor: ${ctx.source}`);
    }
    showVariant(state.samples.length ? state.active : st.active_variant, null);
    addEvents(st.events || [], false);
  }

  // The family's build: shown while it grows, when it failed, or when the catalog was
  // measured on another device; hidden once complete here.
  function showBuild(b) {
    const box = document.getElementById("build");
    if (!box) return;
    const p = (b && b.progress) || null;
    const growing = b && (!b.complete || (p && !p.finished) || b.background === "profile");
    const failed = b && (b.background === "failed" || (p && p.stage === "failed"));
    const foreign = b && b.foreign;
    box.hidden = !(growing || failed || foreign);
    if (box.hidden) return;
    const stage = failed ? "failed" : foreign && !growing ? "foreign" : (p && p.stage) || "build";
    const label = { first: "first engine", fit: "fitting front", networks: "building",
      profile: "profiling", complete: "complete", failed: "build failed", foreign: "foreign" };
    const chipEl = document.getElementById("build-stage");
    chipEl.textContent = label[stage] || stage;
    chipEl.className = `chip ${failed || foreign ? "bad" : stage === "complete" ? "ok" : "warn"}`;
    const frac = p && finite(p.fraction) ? p.fraction : 0;
    document.querySelector("#build-meter > span").style.width = `${Math.round(frac * 100)}%`;
    let text = "";
    if (foreign && !growing) {
      text = `catalog measured on ${b.catalog_device || "another device"}: run serve --build`;
    } else if (p) {
      const step = p.total ? ` ${p.done}/${p.total}` : "";
      text = `${Math.round(frac * 100)}%${step}${p.current ? " · " + p.current : ""}` +
        ` · ${p.servable || 0} servable` + (p.message && failed ? ` · ${p.message}` : "");
    }
    setText("build-text", text);
  }

  // A variant's accuracy metric: the catalog's name where the server passes it on.
  const metricOf = (v) => (v && (v.accuracy_metric || v.metric)) || null;
  const metricName = (metric, form) => (metric
    ? (METRICS[metric] || [metric, metric])[form] : ["Accuracy", "accuracy"][form]);

  function renderVariants(list) {
    state.variants = new Map(list.map((v) => [v.id, v]));
    const named = list.map(metricOf).filter(Boolean);
    state.metric = named.length ? named[0] : null;
    setText("accuracy-head", metricName(state.metric, 0));
    $("accuracy-head").title = METRIC_NOTES[state.metric] || `the catalog's accuracy metric: ${metricName(state.metric, 1)}`;
    const rows = list.slice().sort((a, b) => (b.accuracy ?? -1) - (a.accuracy ?? -1)).map((v) => {
      const tr = el("tr");
      tr.dataset.id = v.id;
      if (v.id === state.active) tr.classList.add("active");
      const prec = el("td");
      prec.appendChild(el("span", `chip prec-${v.precision}`, v.precision));
      tr.append(el("td", "mono", v.id), prec,
        el("td", "num", finite(v.accuracy) ? `${num(v.accuracy * 100, 1)} %` : "—"),
        el("td", "num", msText(v.latency_p50_ms)), predictionCell(v.prediction), gateCell(v));
      const status = v.status || "servable";
      if (status !== "servable") {
        tr.classList.add(`gate-${status}`);  // greyed: never the controller's choice
        tr.title = v.status_reason || status;
      }
      return tr;
    });
    $("variants-body").replaceChildren(...(rows.length ? rows : [emptyRow(6, "no variants")]));
    const held = list.filter((v) => (v.status || "servable") !== "servable").length;
    setText("variants-note", `${list.length} in the catalog` + (held ? `, ${held} not servable` : ""));
  }

  // The controller's prediction: p99, and how it was made. "learned 80%" says how much of it
  // is observation (served calls, shadow runs); "extrapolated ×2.0" that no profile of this
  // mode and device exists, so the profile of another was scaled by that factor.
  function predictionCell(p) {
    const td = el("td", "num prediction");
    if (!p) { td.textContent = "—"; return td; }
    td.appendChild(el("span", "", msText(p.p99_ms)));
    let how = "profile";
    let kind = "";
    if (p.extrapolated) {
      how = finite(p.extrapolation) ? `extrap. ×${num(p.extrapolation, 1)}` : "unmeasured";
      kind = "warn";
    }
    if (p.confidence >= 0.05) how = `learned ${Math.round(p.confidence * 100)}%`;
    if (p.confidence >= 0.5) kind = "ok";
    td.appendChild(el("span", `reason chip ${kind}`, how));
    td.title = `${p.source}; ${num(p.samples, 0)} samples` +
      (finite(p.age_s) ? `, newest ${num(p.age_s, 1)} s old` : "") +
      `; contention ×${num(p.contention, 2)}; profile p50 ${msText(p.prior_p50_ms)} ms`;
    return td;
  }

  // The build gate's verdict: a chip, with the reason in a line below (and on hover).
  function gateCell(v) {
    const status = v.status || "servable";
    const td = el("td", "gate");
    const kind = { servable: "ok", rejected: "bad", dominated: "warn" }[status] || "";
    td.appendChild(el("span", `chip ${kind}`, status));
    if (finite(v.precision_drop)) {
      td.appendChild(el("span", "drop", ` −${num(v.precision_drop * 100, 2)} pt`));
    }
    if (v.status_reason) td.appendChild(el("span", "reason", v.status_reason));
    return td;
  }

  function emptyRow(cols, text) {
    const tr = el("tr", "empty-row");
    const td = el("td", "", text);
    td.colSpan = cols;
    tr.appendChild(td);
    return tr;
  }

  function renderPolicy(policy) {
    const box = $("policy");
    const item = (label, value) => {
      const c = el("span", "chip");
      c.append(document.createTextNode(`${label} `), el("b", "", value));
      return c;
    };
    if (!policy) {
      box.replaceChildren(item("policy", "pressure rule"), el("span", "muted", "no budget set"));
      return;
    }
    const items = [item("objective", policy.objective || "accuracy")];
    if (finite(policy.latency_budget_ms)) items.push(item("p99 budget", `${budgetText(policy.latency_budget_ms)} ms`));
    if (finite(policy.min_accuracy)) items.push(item(`min ${metricName(state.metric, 1)}`, `${num(policy.min_accuracy * 100, 1)} %`));
    if (finite(policy.memory_budget_mb)) items.push(item("memory", `${num(policy.memory_budget_mb)} MB`));
    if (finite(policy.max_power_mw)) items.push(item("power", `${num(policy.max_power_mw)} mW`));
    box.replaceChildren(...items);
  }

  // ---- camera streams --------------------------------------------------------------------

  async function refreshStreams() {
    if (document.hidden) return;
    let body;
    try {
      const r = await fetch("v1/streams", { cache: "no-store" });
      if (!r.ok) return; // 503 while starting
      body = await r.json();
    } catch (err) {
      return;
    }
    renderStreams(body);
  }

  function renderStreams(body) {
    const detection = body.task === "detection";
    $("streams-detections").hidden = !detection;
    const entries = Object.entries(body.streams || {}).reverse(); // most recently seen first
    const rows = entries.map(([id, s]) => {
      const tr = el("tr");
      tr.dataset.stream = id;
      tr.append(el("td", "mono", id), el("td", "num", num(s.frames)), el("td", "num", num(s.errors)),
        el("td", "num", `${msText(s.latency_p50_ms)} / ${msText(s.latency_p99_ms)}`),
        el("td", "mono", s.last_variant || "—"),
        el("td", "time", finite(s.last_seen) ? clock(s.last_seen) : "—"));
      if (detection) tr.appendChild(detectionsCell(s));
      return tr;
    });
    const empty = emptyRow(detection ? 7 : 6, "no stream seen yet: name one with ?stream=<id>");
    $("streams-body").replaceChildren(...(rows.length ? rows : [empty]));
    setText("streams-note", rows.length
      ? `${rows.length} stream${rows.length === 1 ? "" : "s"}, most recent first`
      : "requests named with ?stream=<id>");
  }

  // Per-class counts as chips, most frequent first, and how many frames had any object.
  function detectionsCell(s) {
    const td = el("td", "detections");
    const counts = Object.entries(s.detections || {})
      .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    const total = counts.reduce((n, [, c]) => n + c, 0);
    const share = s.frames ? ` (${num((100 * (s.frames_with_detections || 0)) / s.frames)} %)` : "";
    td.appendChild(el("span", "total",
      `${num(total)} in ${num(s.frames_with_detections || 0)} of ${num(s.frames)} frames${share}`));
    for (const [label, c] of counts.slice(0, MAX_CLASS_CHIPS)) {
      const item = el("span", "chip");
      item.dataset.label = label;
      item.append(document.createTextNode(`${label} `), el("b", "", num(c)));
      td.appendChild(item);
    }
    if (counts.length > MAX_CLASS_CHIPS) {
      td.appendChild(el("span", "muted", `+${counts.length - MAX_CLASS_CHIPS} more`));
    }
    td.title = counts.map(([label, c]) => `${label}: ${c}`).join("\n") || "nothing detected yet";
    return td;
  }

  // ---- start -----------------------------------------------------------------------------

  function everySecond() {
    if (state.uptime) setText("uptime", `up ${duration(state.uptime.seconds + Date.now() / 1000 - state.uptime.at)}`);
    setConn(state.conn);
    scheduleDraw(); // keeps the time axis moving, so a stalled stream shows as a gap
  }

  for (const button of $("window").querySelectorAll("button")) {
    button.addEventListener("click", () => {
      state.windowS = Number(button.dataset.window);
      for (const b of $("window").querySelectorAll("button")) b.setAttribute("aria-pressed", String(b === button));
      scheduleDraw();
    });
  }
  new ResizeObserver(scheduleDraw).observe(document.querySelector("main"));
  document.addEventListener("visibilitychange", scheduleDraw);
  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", scheduleDraw);
  setInterval(everySecond, 1000);
  setInterval(refreshStatus, STATUS_EVERY_MS);
  setInterval(refreshStreams, STREAMS_EVERY_MS);
  refreshStatus();
  refreshStreams();
  connect();
})();
