// The sweep explorer's page logic: four views drawn with plotly.js from the inline data (citylens/report/explorer.py).
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("explorer-data").textContent);
  const T = D.thumbs;
  const CONFIG = { displaylogo: false, responsive: true };
  const drawn = {};
  const state = { run: 0, image: null, threshold: null };

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => node.setAttribute(k, v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // A thumbnail: one cell of a JPEG atlas, drawn as a CSS background (allowed from file://).
  function thumb(files, i, scale) {
    const box = el("div", { class: "thumb" });
    const side = T.side * scale;
    box.style.width = side + "px";
    box.style.height = side + "px";
    if (!files) return box;
    const k = Math.floor(i / T.per_atlas), cell = i % T.per_atlas;
    box.style.backgroundImage = "url('" + files[k] + "')";
    box.style.backgroundSize = T.cols * side + "px auto";
    box.style.backgroundPosition = -(cell % T.cols) * side + "px " + -Math.floor(cell / T.cols) * side + "px";
    return box;
  }

  function title(text) {
    return { text: text, x: 0.01, xanchor: "left" };
  }

  function fmt(v, digits) {
    return v === null || v === undefined ? "–" : v.toFixed(digits);
  }

  // ---- Map: the t-SNE of one run's masks; the hover card (explanation, id, cities, probability) replaces
  // plotly's own hover label.
  function drawMap() {
    const run = D.runs[state.run];
    const plot = document.getElementById("map-plot");
    const empty = !run.x;
    document.getElementById("map-empty").hidden = !empty;
    plot.hidden = empty;
    if (empty) return;
    const traces = [];
    D.cities.forEach((city, c) => {
      [false, true].forEach((wrong) => {
        const idx = [];
        D.city.forEach((t, i) => {
          if (t === c && (run.pred[i] !== t) === wrong && run.x[i] !== null) idx.push(i);
        });
        if (!idx.length) return;
        traces.push({
          type: "scatter",
          mode: "markers",
          name: city + (wrong ? " (misclassified)" : ""),
          x: idx.map((i) => run.x[i]),
          y: idx.map((i) => run.y[i]),
          customdata: idx,
          hoverinfo: "none",
          marker: {
            color: D.city_colours[c],
            symbol: wrong ? "x" : "circle",
            size: wrong ? 9 : Math.max(3, Math.min(8, 2000 / D.image_ids.length)),
            opacity: 0.8,
            line: wrong ? { width: 1, color: "black" } : { width: 0 },
          },
        });
      });
    });
    const layout = {
      title: title(run.label + ": t-SNE of the masks (" + D.image_ids.length + " test images)"),
      hovermode: "closest",
      xaxis: { showticklabels: false, zeroline: false },
      yaxis: { showticklabels: false, zeroline: false },
      margin: { t: 40, l: 20, r: 20, b: 20 },
    };
    Plotly.react(plot, traces, layout, CONFIG);
    if (!plot.dataset.bound) {
      plot.dataset.bound = "1";
      const card = document.getElementById("hover-card");
      plot.on("plotly_hover", (ev) => {
        const p = ev.points[0], i = p.customdata, r = D.runs[state.run];
        card.replaceChildren(thumb(T.explanation[state.run], i, 1),
          el("div", {}, D.image_ids[i]),
          el("div", {}, D.cities[D.city[i]] + " → " + D.cities[r.pred[i]] + " (" + fmt(r.prob[i], 2) + ")"));
        card.hidden = false;
        const e = ev.event;
        card.style.left = (e.clientX + 16) + "px";
        card.style.top = (e.clientY + 16) + "px";
      });
      plot.on("plotly_unhover", () => { card.hidden = true; });
      plot.on("plotly_click", (ev) => {
        card.hidden = true;
        showImage(ev.points[0].customdata);
        show("image");
      });
    }
  }

  // ---- Concepts of a run (explorer.py's concept_data): one map at a time over the image, chosen by a select
  // listing the run's concepts by their importance for this image.
  const conceptBytes = {};

  function conceptMaps(r) {
    if (!conceptBytes[r]) {
      const text = atob(D.runs[r].concepts.maps);
      const bytes = new Uint8Array(text.length);
      for (let j = 0; j < text.length; j++) bytes[j] = text.charCodeAt(j);
      conceptBytes[r] = bytes;
    }
    return conceptBytes[r];
  }

  // The jet colour map, as the mask overlays use; alpha grows with the concept's strength.
  function jet(t) {
    const c = (x) => Math.round(255 * Math.max(0, Math.min(1, 1.5 - Math.abs(x))));
    return [c(4 * t - 3), c(4 * t - 2), c(4 * t - 1)];
  }

  function paintConcept(canvas, r, i, c) {
    const C = D.runs[r].concepts, g = C.grid, bytes = conceptMaps(r);
    const ctx = canvas.getContext("2d");
    const pixels = ctx.createImageData(g, g);
    const at = (i * C.k + c) * g * g;
    for (let j = 0; j < g * g; j++) {
      const v = bytes[at + j] / 255, rgb = jet(v);
      pixels.data.set([rgb[0], rgb[1], rgb[2], Math.round(200 * v)], 4 * j);
    }
    ctx.putImageData(pixels, 0, 0);
  }

  function conceptLabel(C, c, i) {
    const name = C.names[c] || "no object";
    return "concept " + c + ": " + name + ", Δlog P " + fmt(C.importance[i][c], 3);
  }

  function conceptView(run, r, i) {
    const C = run.concepts;
    const box = el("div", { class: "concepts", "data-run": run.label });
    const score = (c) => (C.importance[i][c] === null ? -Infinity : C.importance[i][c]);
    const order = [...Array(C.k).keys()].sort((a, b) => score(b) - score(a) || a - b);
    const select = el("select", { class: "concept-select" });
    order.forEach((c) => select.append(el("option", { value: c }, conceptLabel(C, c, i))));
    const stage = el("div", { class: "concept-stage" });
    const canvas = el("canvas", { class: "concept-map", width: C.grid, height: C.grid });
    canvas.style.width = canvas.style.height = T.side * 2 + "px";
    stage.append(thumb(T.image, i, 2), canvas);
    const caption = el("div", { class: "concept-caption" });
    const draw = () => {
      const c = Number(select.value);
      paintConcept(canvas, r, i, c);
      canvas.dataset.concept = String(c);
      const city = (C.city_importance[D.cities[D.city[i]]] || [])[c];
      caption.textContent = conceptLabel(C, c, i) + " (this image); " + D.cities[D.city[i]] + " mean " +
        fmt(city === undefined ? null : city, 3);
    };
    select.addEventListener("change", draw);
    draw();
    box.append(el("div", { class: "hint" }, "concepts at " + C.layer + " (" + C.k + ")"), select, stage, caption);
    return box;
  }

  // ---- Image: one test image as every run sees and explains it.
  function showImage(i) {
    state.image = i;
    document.getElementById("image-id").value = D.image_ids[i];
    document.getElementById("image-error").textContent = "";
    const panels = document.getElementById("image-panels");
    const head = el("div", { class: "panel", id: "image-original" });
    head.append(thumb(T.image, i, 2), el("div", {}, D.image_ids[i]), el("div", {}, "true city: " + D.cities[D.city[i]]));
    if (!T.image) head.append(el("div", { class: "hint" }, "(data views not found: masks alone)"));
    const items = [head];
    D.runs.forEach((run, r) => {
      const panel = el("div", { class: "panel run-panel", "data-run": run.label, "data-image": D.image_ids[i] });
      const pair = el("div", { class: "pair" });
      pair.append(thumb(T.overlay[r], i, 2), thumb(T.explanation[r], i, 2));
      const wrong = run.pred[i] !== D.city[i];
      panel.append(el("strong", {}, run.label), pair,
        el("div", { class: wrong ? "wrong" : "" },
          "→ " + D.cities[run.pred[i]] + " " + fmt(run.prob[i], 2) + (wrong ? " (wrong)" : "")));
      if (run.concepts) panel.append(conceptView(run, r, i));
      items.push(panel);
    });
    panels.replaceChildren(...items);
    const box = document.getElementById("image-ar");
    if (!D.pairs.length) { box.replaceChildren(); return; }
    const table = el("table", { class: "ar" });
    const top = el("tr");
    top.append(el("th", {}, "AR of this image"), ...D.runs.map((r) => el("th", {}, r.label)));
    table.append(top);
    const grid = D.runs.map(() => D.runs.map(() => null));
    D.pairs.forEach((p) => { grid[p.a][p.b] = grid[p.b][p.a] = p.per_image[i]; });
    D.runs.forEach((r, a) => {
      const tr = el("tr");
      tr.append(el("th", {}, r.label), ...grid[a].map((v, b) => el("td", {}, a === b ? "" : fmt(v, 3))));
      table.append(tr);
    });
    box.replaceChildren(table);
  }

  function findImage(text) {
    const q = text.trim();
    if (!q) return -1;
    const exact = D.image_ids.indexOf(q);
    if (exact >= 0) return exact;
    return D.image_ids.findIndex((id) => id.endsWith("/" + q) || id.endsWith(q));
  }

  // ---- Objects: object-ratio bars per city, every run, at the chosen threshold.
  function drawObjects() {
    const box = document.getElementById("objects-plots");
    const withRatios = D.runs.map((r, k) => [r, k]).filter(([r]) => r.ratios);
    document.getElementById("objects-empty").hidden = withRatios.length > 0;
    if (!withRatios.length) return;
    const t = state.threshold;
    const cities = D.cities.filter((c) => withRatios.some(([r]) =>
      r.ratios.city.some((cc, j) => cc === c && r.ratios.threshold[j] === t)));
    const causal = {};
    withRatios.forEach(([r]) => Object.entries(r.causal || {}).forEach(([c, objs]) => {
      causal[c] = (causal[c] || new Set());
      objs.forEach((o) => causal[c].add(o));
    }));
    const divs = cities.map((city) => {
      const id = "objects-city-" + D.cities.indexOf(city);
      const div = document.getElementById(id) || el("div", { class: "objects-city", id: id });
      return [city, div];
    });
    box.replaceChildren(...divs.map(([, d]) => d));
    divs.forEach(([city, div]) => {
      const planted = new Set((D.planted || {})[city] || []);
      const sums = {};
      withRatios.forEach(([r]) => r.ratios.object.forEach((o, j) => {
        if (r.ratios.city[j] === city && r.ratios.threshold[j] === t) {
          sums[o] = sums[o] || [0, 0];
          sums[o][0] += r.ratios.ratio[j];
          sums[o][1] += 1;
        }
      }));
      const ranked = Object.keys(sums).sort((a, b) => sums[b][0] / sums[b][1] - sums[a][0] / sums[a][1]);
      const shown = ranked.slice(0, 12).concat(ranked.slice(12).filter((o) => planted.has(o))).reverse();
      const label = (o) => (planted.has(o) ? "★ " : "") + ((causal[city] || new Set()).has(o) ? "◆ " : "") + o;
      const traces = withRatios.map(([r]) => {
        const value = {}, low = {}, high = {};
        r.ratios.object.forEach((o, j) => {
          if (r.ratios.city[j] === city && r.ratios.threshold[j] === t) {
            value[o] = r.ratios.ratio[j];
            if (r.ratios.ci_low) { low[o] = r.ratios.ci_low[j]; high[o] = r.ratios.ci_high[j]; }
          }
        });
        const x = shown.map((o) => (o in value ? value[o] : null));
        const trace = {
          type: "bar", orientation: "h", name: r.label, y: shown.map(label), x: x,
          marker: { color: r.colour },
          hovertemplate: r.label + ": %{y} R = %{x:.3f}<extra></extra>",
        };
        if (r.ratios.ci_low) {
          trace.error_x = {
            type: "data", symmetric: false,
            array: shown.map((o, j) => (o in high && x[j] !== null ? high[o] - x[j] : 0)),
            arrayminus: shown.map((o, j) => (o in low && x[j] !== null ? x[j] - low[o] : 0)),
          };
        }
        return trace;
      });
      Plotly.react(div, traces, {
        title: title(city + " (threshold " + t + ")"), barmode: "group",
        xaxis: { range: [0, 1], title: { text: "R (explained / all pixels of the object)" } },
        margin: { l: 150, t: 40, r: 10, b: 50 }, legend: { orientation: "h", y: -0.15 },
      }, CONFIG);
    });
  }

  // ---- Pairs: Table 2 as a run x run heatmap, intervals on hover.
  function drawPairs() {
    const plot = document.getElementById("pairs-plot");
    document.getElementById("pairs-empty").hidden = D.pairs.length > 0;
    plot.hidden = !D.pairs.length;
    if (!D.pairs.length) return;
    const labels = D.runs.map((r) => r.label);
    const z = labels.map(() => labels.map(() => null));
    const text = labels.map(() => labels.map(() => ""));
    D.pairs.forEach((p) => {
      const hover = labels[p.a] + " vs " + labels[p.b] + " (" + p.group + ")<br>AR " + fmt(p.ar, 4) +
        " [" + fmt(p.ci_low, 4) + ", " + fmt(p.ci_high, 4) + "] over " + p.per_image.length + " images";
      z[p.a][p.b] = z[p.b][p.a] = p.ar;
      text[p.a][p.b] = text[p.b][p.a] = hover;
    });
    Plotly.react(plot, [{
      type: "heatmap", x: labels, y: labels, z: z, text: text, colorscale: "Viridis",
      hovertemplate: "%{text}<extra></extra>", texttemplate: "%{z:.3f}", colorbar: { title: { text: "AR" } },
    }], {
      title: title("Average residual between runs (Table 2)"), yaxis: { autorange: "reversed" },
      margin: { l: 120, b: 120, t: 40 },
    }, CONFIG);
  }

  const DRAW = { map: drawMap, image: () => {}, objects: drawObjects, pairs: drawPairs };

  function show(view) {
    document.querySelectorAll("#tabs button").forEach((b) => b.classList.toggle("active", b.dataset.view === view));
    document.querySelectorAll(".view").forEach((v) => v.classList.toggle("active", v.id === "view-" + view));
    if (!drawn[view]) { DRAW[view](); drawn[view] = true; }
    document.querySelectorAll("#view-" + view + " .js-plotly-plot").forEach((p) => Plotly.Plots.resize(p));
  }

  function init() {
    const runSelect = document.getElementById("map-run");
    D.runs.forEach((r, k) => runSelect.append(el("option", { value: k }, r.label)));
    runSelect.addEventListener("change", () => { state.run = Number(runSelect.value); drawMap(); });
    const thr = document.getElementById("objects-threshold");
    D.thresholds.forEach((t) => thr.append(el("option", { value: t }, String(t))));
    state.threshold = D.thresholds.includes(D.threshold) ? D.threshold : D.thresholds[0];
    if (state.threshold !== undefined) thr.value = String(state.threshold);
    thr.addEventListener("change", () => { state.threshold = Number(thr.value); drawObjects(); });
    const go = () => {
      const i = findImage(document.getElementById("image-id").value);
      if (i < 0) document.getElementById("image-error").textContent = "no test image with that id";
      else showImage(i);
    };
    document.getElementById("image-go").addEventListener("click", go);
    document.getElementById("image-id").addEventListener("keydown", (e) => { if (e.key === "Enter") go(); });
    document.querySelectorAll("#tabs button").forEach((b) => b.addEventListener("click", () => show(b.dataset.view)));
    showImage(0);
    show("map");
    window.explorerReady = true;
    window.explorerLoadMs = performance.now();
  }

  init();
})();
