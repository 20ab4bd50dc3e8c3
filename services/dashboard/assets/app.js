// eventpipe dashboard: renders /api/stream snapshots and the customer drill-down.
// Plain JS, no dependencies. Every value from the server reaches the DOM through
// textContent or an SVG attribute, never as markup.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const SVG = 'http://www.w3.org/2000/svg';
  const BANDS = ['low', 'medium', 'high', 'critical'];
  const STAGE_COLORS = { producer: '#3b6fd8', 'feature-processor': '#8e44ad', intervention: '#e67e22', dashboard: '#16a085' };
  const PALETTE = ['#2c7fb8', '#d95f02', '#7570b3', '#1b9e77', '#e7298a', '#66a61e'];

  // ---- small helpers -------------------------------------------------------------

  function el(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function svgEl(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = String(text);
    return e;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function setText(id, text) {
    const node = $(id);
    const value = text === undefined || text === null ? '' : String(text);
    if (node.textContent !== value) node.textContent = value;
  }

  const intFmt = new Intl.NumberFormat('en-GB');
  const fmtInt = (n) => (n === null || n === undefined ? '–' : intFmt.format(Math.round(n)));
  const fmtRate = (n) => (n >= 100 ? intFmt.format(Math.round(n)) : n.toFixed(1));
  const fmtPct = (x) => (x === null || x === undefined ? '–' : (100 * x).toFixed(1) + ' %');
  const fmtScore = (x) => Number(x).toFixed(3);
  const fmtSigned = (x) => (x >= 0 ? '+' : '−') + Math.abs(x).toFixed(2);

  function fmtEventTime(iso) {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    return d.toISOString().slice(0, 16).replace('T', ' ') + ' UTC';
  }

  function bandPill(band) {
    const safe = BANDS.includes(band) ? band : 'low';
    return el('span', 'pill band-' + safe, band);
  }

  function customerLink(id) {
    const b = el('button', 'link', id);
    b.type = 'button';
    b.title = 'Open customer ' + id;
    b.addEventListener('click', () => openCustomer(id));
    return b;
  }

  function stageColor(name, i) {
    return STAGE_COLORS[name] || PALETTE[i % PALETTE.length];
  }

  // ---- charts --------------------------------------------------------------------

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function shortNumber(v) {
    if (v >= 1e6) return (v / 1e6).toFixed(v >= 1e7 ? 0 : 1) + 'M';
    if (v >= 1e3) return (v / 1e3).toFixed(v >= 1e4 ? 0 : 1) + 'k';
    return String(Math.round(v * 10) / 10);
  }

  // Draws series [{name, color, values}] sharing one time axis of 1 s steps ending now.
  // opts.yMax fixes the scale; opts.compact draws a sparkline (two gridlines, no time axis).
  function lineChart(svg, series, emptyText, opts) {
    const o = opts || {};
    const W = svg.clientWidth || 600;
    const H = svg.clientHeight || 220;
    const m = o.compact ? { l: 30, r: 8, t: 6, b: 6 } : { l: 46, r: 12, t: 10, b: 22 };
    svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
    clear(svg);
    const n = series.length ? series[0].values.length : 0;
    if (!n) {
      svg.appendChild(svgEl('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle' }, emptyText));
      return;
    }
    let max = 0;
    for (const s of series) for (const v of s.values) if (v !== null && v > max) max = v;
    const top = o.yMax || niceMax(max);
    const x = (i) => m.l + (n === 1 ? (W - m.l - m.r) / 2 : (i / (n - 1)) * (W - m.l - m.r));
    const y = (v) => m.t + (1 - v / top) * (H - m.t - m.b);
    const ticks = o.compact ? 1 : 4;
    for (let k = 0; k <= ticks; k++) {
      const v = (top * k) / ticks;
      svg.appendChild(svgEl('line', { x1: m.l, x2: W - m.r, y1: y(v), y2: y(v), class: k ? 'grid-line' : 'axis' }));
      svg.appendChild(svgEl('text', { x: m.l - 6, y: y(v) + 4, 'text-anchor': 'end' }, shortNumber(v)));
    }
    if (!o.compact) {
      // Time ticks counted back from the newest point.
      const span = n - 1;
      const step = span <= 120 ? 30 : span <= 600 ? 60 : 300;
      for (let back = 0; back <= span; back += step) {
        const label = back === 0 ? 'now' : back < 60 ? `−${back}s` : `−${back / 60}m`;
        svg.appendChild(svgEl('text', { x: x(span - back), y: H - 6, 'text-anchor': back === 0 ? 'end' : 'middle' }, label));
      }
    }
    for (const s of series) {
      let d = '';
      let pen = false;
      s.values.forEach((v, i) => {
        if (v === null) { pen = false; return; }
        d += (pen ? 'L' : 'M') + x(i).toFixed(1) + ' ' + y(v).toFixed(1);
        pen = true;
      });
      if (d) svg.appendChild(svgEl('path', { d, fill: 'none', stroke: s.color, 'stroke-width': 2, 'stroke-linejoin': 'round', class: 'series' }));
      // A point with no neighbour draws no line: mark it (and every point of a sparkline).
      const isolated = (i) => (i === 0 || s.values[i - 1] === null) && (i === n - 1 || s.values[i + 1] === null);
      s.values.forEach((v, i) => {
        if (v !== null && (o.compact || isolated(i))) svg.appendChild(svgEl('circle', { cx: x(i), cy: y(v), r: o.compact ? 3 : 2.5, fill: s.color }));
      });
    }
  }

  function legend(ul, series, fmt) {
    clear(ul);
    for (const s of series) {
      const li = el('li');
      const sw = el('span', 'swatch');
      sw.style.background = s.color;
      li.append(sw, el('span', null, s.name), el('span', 'value', fmt(s.current)));
      ul.appendChild(li);
    }
  }

  // ---- overview ------------------------------------------------------------------

  function renderKpis(stats) {
    const t = stats.totals;
    const flagged = stats.bands.high + stats.bands.critical;
    const q = stats.quality;
    setText('kpi-scores', fmtInt(t.risk_scores));
    setText('kpi-scores-sub', t.malformed ? `${fmtInt(t.malformed)} unusable records skipped` : 'since start');
    setText('kpi-customers', fmtInt(stats.customers_tracked));
    setText('kpi-customers-sub', stats.watermark ? 'event time ' + fmtEventTime(stats.watermark) : '');
    setText('kpi-flagged', fmtInt(flagged));
    setText('kpi-flagged-sub', stats.customers_tracked ? fmtPct(flagged / stats.customers_tracked) + ' of tracked' : '');
    setText('kpi-interventions', fmtInt(t.interventions));
    setText('kpi-interventions-sub', `${fmtInt(t.customer_outcomes)} outcomes seen`);
    setText('kpi-precision', fmtPct(q.precision));
    setText('kpi-precision-sub', `${fmtInt(q.true_positives)} of ${fmtInt(q.true_positives + q.false_positives)} decided flags`);
    setText('kpi-recall', fmtPct(q.recall));
    setText('kpi-recall-sub', `${fmtInt(q.caught_defaults)} of ${fmtInt(q.defaults)} defaults`);
  }

  function renderCharts(stages) {
    const rates = stages.map((s, i) => {
      // The producer consumes nothing: chart what it produces instead.
      const consumes = s.series.consumed.some((v) => v > 0);
      return {
        name: s.stage,
        color: stageColor(s.stage, i),
        values: consumes ? s.series.consumed : s.series.produced,
        current: consumes ? s.consumed_per_s : s.produced_per_s,
      };
    });
    const lags = stages.map((s, i) => ({ name: s.stage, color: stageColor(s.stage, i), values: s.series.lag, current: s.lag }));
    lineChart($('chart-rates'), rates, 'Waiting for pipeline-stats…');
    lineChart($('chart-lag'), lags, 'Waiting for pipeline-stats…');
    legend($('legend-rates'), rates, (v) => fmtRate(v) + '/s');
    legend($('legend-lag'), lags, (v) => (v === null ? '–' : fmtInt(v)));
  }

  function renderBands(bands) {
    const box = $('bands');
    const total = BANDS.reduce((a, b) => a + bands[b], 0);
    if (!box.childElementCount) {
      for (const b of BANDS) {
        const row = el('div', 'band-row');
        const bar = el('div', 'bar');
        const fill = el('div', 'fill-' + b);
        fill.id = 'band-fill-' + b;
        bar.appendChild(fill);
        const count = el('span', 'count');
        count.id = 'band-count-' + b;
        row.append(bandPill(b), bar, count);
        box.appendChild(row);
      }
    }
    for (const b of BANDS) {
      const share = total ? bands[b] / total : 0;
      $('band-fill-' + b).style.width = (100 * share).toFixed(2) + '%';
      setText('band-count-' + b, `${fmtInt(bands[b])} · ${total ? (100 * share).toFixed(0) : 0}%`);
    }
  }

  function renderQuality(q) {
    setText('q-precision', fmtPct(q.precision));
    setText('q-recall', fmtPct(q.recall));
    $('q-precision-bar').style.width = ((q.precision || 0) * 100).toFixed(1) + '%';
    $('q-recall-bar').style.width = ((q.recall || 0) * 100).toFixed(1) + '%';
    setText('q-tp', fmtInt(q.true_positives));
    setText('q-fp', fmtInt(q.false_positives));
    setText('q-pending', fmtInt(q.pending));
    setText('q-defaults', `${fmtInt(q.caught_defaults)} / ${fmtInt(q.defaults)}`);
    setText('q-horizon', q.horizon_days);
    setText('q-horizon-2', q.horizon_days);
  }

  function renderStages(stages) {
    const body = $('stages').tBodies[0];
    clear(body);
    stages.forEach((s, i) => {
      const tr = el('tr');
      const name = el('td');
      const dot = el('span', 'swatch-dot');
      dot.style.background = stageColor(s.stage, i);
      name.append(dot, document.createTextNode(s.stage));
      tr.append(
        name,
        el('td', 'num', s.instances.length),
        el('td', 'num', fmtRate(s.consumed_per_s)),
        el('td', 'num', fmtRate(s.produced_per_s)),
        el('td', 'num', fmtRate(s.dead_lettered_per_s)),
        el('td', 'num', s.lag === null ? '–' : fmtInt(s.lag)),
      );
      body.appendChild(tr);
    });
    $('stages-empty').hidden = stages.length > 0;
  }

  function renderTopRisk(rows) {
    const body = $('top-risk').tBodies[0];
    clear(body);
    for (const r of rows) {
      const tr = el('tr');
      const id = el('td');
      id.appendChild(customerLink(r.customer_id));
      const band = el('td');
      band.appendChild(bandPill(r.band));
      tr.append(id, el('td', 'num', fmtScore(r.score)), band, el('td', 'mono', r.top_factor || '–'), el('td', 'muted', fmtEventTime(r.event_time)));
      body.appendChild(tr);
    }
    $('top-risk-empty').hidden = rows.length > 0;
  }

  let seenInterventions = new Set();

  function interventionItem(i, withCustomer) {
    const li = el('li');
    li.append(el('span', 'time', fmtEventTime(i.event_time)));
    if (withCustomer) {
      const c = el('span');
      c.appendChild(customerLink(i.customer_id));
      li.append(c);
    }
    const action = el('span');
    action.append(el('span', 'pill', i.action), document.createTextNode(' '), bandPill(i.band));
    li.append(action, el('span', 'reason', i.reason));
    li.title = `${i.rule}: ${i.reason} (score ${fmtScore(i.score)}, model ${i.model_version})`;
    return li;
  }

  function renderFeed(items) {
    const ol = $('feed');
    clear(ol);
    const next = new Set();
    for (const i of items) {
      const li = interventionItem(i, true);
      if (seenInterventions.size && !seenInterventions.has(i.event_id)) li.classList.add('new');
      next.add(i.event_id);
      ol.appendChild(li);
    }
    seenInterventions = next;
    $('feed-empty').hidden = items.length > 0;
  }

  function setStatus(kind, text) {
    const s = $('status');
    s.className = 'pill pill-' + kind;
    setText('status', text);
  }

  function render(snapshot) {
    const stats = snapshot.stats;
    renderKpis(stats);
    renderCharts(stats.stages);
    renderBands(stats.bands);
    renderQuality(stats.quality);
    renderStages(stats.stages);
    renderTopRisk(stats.top_risk);
    renderFeed(snapshot.interventions);
    if (stats.caught_up) setStatus('live', 'Live');
    else setStatus('wait', 'Catching up…');
    setText('updated', 'updated ' + new Date(stats.generated_at).toLocaleTimeString('en-GB'));
    if (current && !$('drill').hidden) refreshCustomer();
  }

  // ---- drill-down ----------------------------------------------------------------

  let current = null;
  let inFlight = false;

  function openCustomer(id) {
    current = id;
    $('drill').hidden = false;
    setText('drill-customer', id);
    $('drill-body').hidden = true;
    $('drill-error').hidden = true;
    if (location.hash !== '#customer=' + encodeURIComponent(id)) {
      history.replaceState(null, '', '#customer=' + encodeURIComponent(id));
    }
    refreshCustomer();
  }

  function closeCustomer() {
    current = null;
    $('drill').hidden = true;
    history.replaceState(null, '', location.pathname);
  }

  async function refreshCustomer() {
    if (inFlight || !current) return;
    inFlight = true;
    const id = current;
    try {
      const res = await fetch('/api/customers/' + encodeURIComponent(id), { cache: 'no-store' });
      if (id !== current) return;
      if (res.status === 404) {
        showCustomerError(`No customer “${id}” in the dashboard's memory. It holds the customers seen in recent records.`);
      } else if (!res.ok) {
        showCustomerError(`The dashboard answered ${res.status}.`);
      } else {
        renderCustomer(await res.json());
      }
    } catch (e) {
      if (id === current) showCustomerError('Cannot reach the dashboard: ' + e.message);
    } finally {
      inFlight = false;
    }
  }

  function showCustomerError(message) {
    setText('drill-error', message);
    $('drill-error').hidden = false;
    $('drill-body').hidden = true;
  }

  function renderCustomer(c) {
    $('drill-error').hidden = true;
    $('drill-body').hidden = false;
    const latest = c.latest;
    setText('drill-score', latest ? fmtScore(latest.score) : '–');
    const band = $('drill-band');
    band.className = 'pill band-' + (latest && BANDS.includes(latest.band) ? latest.band : 'low');
    setText('drill-band', latest ? latest.band : 'no score yet');
    setText('drill-meta', latest ? `as of ${fmtEventTime(latest.event_time)} · model ${latest.model_version}` : 'Only interventions or outcomes seen so far.');

    const fb = $('drill-factors').tBodies[0];
    clear(fb);
    const factors = latest ? latest.top_factors : [];
    const maxAbs = Math.max(1e-9, ...factors.map((f) => Math.abs(f.contribution)));
    for (const f of factors) {
      const tr = el('tr');
      const contrib = el('td');
      const wrap = el('div', 'contrib');
      const bar = el('div', f.contribution < 0 ? 'bar down' : 'bar');
      bar.style.width = Math.round((120 * Math.abs(f.contribution)) / maxAbs) + 'px';
      wrap.append(bar, el('span', 'mono', fmtSigned(f.contribution)));
      contrib.appendChild(wrap);
      tr.append(el('td', 'mono factor', f.feature), el('td', 'num', Number(f.value).toFixed(2)), contrib);
      fb.appendChild(tr);
    }

    const scores = c.recent_scores;
    const spark = $('drill-spark');
    const ordered = scores.slice().reverse();
    lineChart(spark, [{ name: 'score', color: '#13294b', values: ordered.map((p) => p.score) }], 'No scores yet', { yMax: 1, compact: true });
    const sb = $('drill-scores').tBodies[0];
    clear(sb);
    for (const p of scores.slice(0, 8)) {
      const tr = el('tr');
      const b = el('td');
      b.appendChild(bandPill(p.band));
      tr.append(el('td', 'muted', fmtEventTime(p.event_time)), el('td', 'num', fmtScore(p.score)), b);
      sb.appendChild(tr);
    }

    const ul = $('drill-interventions');
    clear(ul);
    for (const i of c.interventions) ul.appendChild(interventionItem(i, false));
    if (!c.interventions.length) ul.appendChild(el('li', 'muted', 'None.'));

    const o = c.outcome;
    setText('drill-outcome', o
      ? `${o.outcome} on ${fmtEventTime(o.event_time)} · ${o.days_in_arrears} days in arrears · arrears ${(o.arrears_minor / 100).toFixed(2)}`
      : 'No outcome yet.');
  }

  // ---- wiring --------------------------------------------------------------------

  function connect() {
    const es = new EventSource('/api/stream');
    es.addEventListener('snapshot', (e) => {
      try {
        render(JSON.parse(e.data));
      } catch (err) {
        console.error('cannot render snapshot', err);
      }
    });
    es.addEventListener('error', () => setStatus('down', 'Reconnecting…'));
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('search').addEventListener('submit', (e) => {
      e.preventDefault();
      const id = $('search-input').value.trim();
      if (id) openCustomer(id);
    });
    $('drill-close').addEventListener('click', closeCustomer);
    document.addEventListener('keydown', (e) => {
      if (e.key === 'Escape' && !$('drill').hidden) closeCustomer();
    });
    const m = location.hash.match(/^#customer=(.+)$/);
    if (m) openCustomer(decodeURIComponent(m[1]));
    connect();
  });
})();
