// The results page: polls the API's read-only JSON every POLL_MS and redraws what changed.
// With API_TOKEN set, the token comes once from the address (#token=…, never sent to the
// server, so never in a log) or the form, stays in this tab's sessionStorage, and goes in
// the Authorization header of every call; images are fetched the same way (blob: URLs).
"use strict";

const POLL_MS = 3000;
const TOKEN_KEY = "chouette-api-token";
let token = sessionStorage.getItem(TOKEN_KEY) || "";
let selected = null;      // the model shown below the leaderboard
let modelSignature = "";  // redraw its figures only when this changes
let blobUrls = [];

function takeTokenFromAddress() {
  const match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (match) {
    token = decodeURIComponent(match[1]);
    sessionStorage.setItem(TOKEN_KEY, token);
    history.replaceState(null, "", location.pathname + location.search);
  }
}

class Unauthorized extends Error {}

async function call(path, as) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const response = await fetch(path, { headers, cache: "no-store" });
  if (response.status === 401) throw new Unauthorized();
  if (!response.ok) {
    let message = response.statusText;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    throw new Error(path + ": " + response.status + " " + message);
  }
  return as === "blob" ? response.blob() : response.json();
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// A metric (digits given) always with its digits, 1 as 1.000; counts and ids as they are.
const fmt = (v, digits) => (v === null || v === undefined ? "–"
  : typeof v === "number" && digits !== undefined ? v.toFixed(digits) : String(v));
const num = (v, digits) => el("td", { class: "num" }, fmt(v, digits));

async function image(path, alt, cls) {
  const img = el("img", { alt, class: cls });
  try {
    const url = URL.createObjectURL(await call(path, "blob"));
    blobUrls.push(url);
    img.src = url;
  } catch (e) {
    if (e instanceof Unauthorized) throw e;
    return el("p", { class: "muted" }, alt + ": " + e.message);
  }
  return img;
}

function drawRequests(body) {
  document.getElementById("in-flight").textContent =
    body.in_flight ? body.in_flight + " in flight" : "";
  const rows = body.requests.map((r) => {
    const progress = el("td", { class: "progress-col" });
    if (r.total) progress.append(el("progress", { value: r.done, max: r.total }));
    progress.append(r.progress || (r.in_flight ? r.stage : ""));
    return el("tr", { "data-request-id": r.request_id, class: r.in_flight ? "in-flight" : "" },
      el("td", { title: r.request_id }, el("code", {}, r.request_id.slice(0, 8))),
      el("td", {}, r.kind),
      el("td", { class: "status-" + r.status }, r.status),
      el("td", {}, r.stage),
      progress,
      el("td", {}, r.architecture || "–"),
      num(r.model_id),
      num(r.seconds, 1),
      el("td", { class: "error" }, r.error || ""));
  });
  if (!rows.length) rows.push(el("tr", {}, el("td", { colSpan: 9, class: "muted" }, "no request yet")));
  document.querySelector("#requests tbody").replaceChildren(...rows);
}

function drawLeaderboard(models) {
  if (selected === null || !models.some((m) => m.model_id === selected)) {
    const champion = models.find((m) => m.champion);
    selected = champion ? champion.model_id : (models[0] ? models[0].model_id : null);
  }
  const rows = models.map((m) => {
    const row = el("tr", { "data-model-id": m.model_id, class: m.model_id === selected ? "selected" : "" },
      num(m.model_id),
      el("td", {}, m.architecture),
      el("td", { class: "status-" + m.status }, m.status),
      el("td", {}, m.start_date + " … " + m.end_date),
      num(m.image_size), num(m.epochs),
      num(m.macro_f1, 3), num(m.accuracy, 3), num(m.later_macro_f1, 3), num(m.n_evaluations),
      el("td", {}, m.champion ? "★ champion" : ""));
    row.addEventListener("click", () => { selected = m.model_id; refresh(); });
    return row;
  });
  if (!rows.length) rows.push(el("tr", {}, el("td", { colSpan: 11, class: "muted" }, "no model yet")));
  document.querySelector("#leaderboard tbody").replaceChildren(...rows);
}

function perClassTable(ev) {
  const body = ev.class_names.map((name) => {
    const m = (ev.per_class || {})[name] || {};
    return el("tr", {}, el("td", {}, name), num(m.precision, 3), num(m.recall, 3), num(m.f1, 3),
      num(m.support));
  });
  return el("table", { class: "per-class" },
    el("thead", {}, el("tr", {}, ...["class", "precision", "recall", "F1", "support"].map(
      (h, i) => el("th", { class: i ? "num" : "" }, h)))),
    el("tbody", {}, ...body));
}

async function gallery(ev) {
  const body = await call("/evaluations/" + ev.evaluation_id + "/misclassified");
  const section = el("div", {}, el("h4", {}, "Misclassified images (" + body.items.length +
    (body.items.length >= body.limit ? "+" : "") + "), Grad-CAM of the predicted class"));
  if (!body.items.length) {
    section.append(el("p", { class: "muted" }, "none"));
    return section;
  }
  const figures = await Promise.all(body.items.map(async (item) => el("figure", {},
    await image(item.overlay, "image " + item.sha256.slice(0, 12), "overlay"),
    el("figcaption", {}, "true ", el("b", {}, item.true_label), ", predicted ",
      el("b", {}, item.predicted), " (" + fmt(item.confidence, 3) + ")"))));
  section.append(el("div", { class: "gallery" }, ...figures));
  return section;
}

async function drawModel(model, requests) {
  // What changes the figures: the model's row and evaluations, or its training's epochs
  // (an evaluation in progress changes nothing shown until its row lands).
  const epochs = requests.filter((r) => r.in_flight && r.model_id === model.model_id &&
    r.stage === "training").map((r) => r.progress);
  const signature = JSON.stringify([model, epochs]);
  if (signature === modelSignature) return;
  const old = blobUrls;
  blobUrls = [];
  const section = document.getElementById("model");
  document.getElementById("model-title").textContent =
    "Model " + model.model_id + ": " + model.architecture + (model.champion ? " ★" : "");
  document.getElementById("model-facts").textContent =
    "dataset " + model.dataset_id + " (" + model.start_date + " … " + model.end_date + ", " +
    fmt(model.n_images) + " images), status " + model.status + ", classes " +
    (model.class_names || []).join(", ");
  const curves = await image("/models/" + model.model_id + "/curves.png",
    "training curves of model " + model.model_id, "curves");
  const evaluations = await Promise.all(model.evaluations.slice().reverse().map(async (ev) =>
    el("div", { class: "evaluation", "data-evaluation-id": ev.evaluation_id },
      el("h3", {}, "Evaluation " + ev.evaluation_id + ": dataset " + ev.dataset_id + " (" +
        ev.start_date + " … " + ev.end_date + "), " + ev.split + " split"),
      el("p", {}, fmt(ev.n_images) + " images: accuracy " + fmt(ev.accuracy, 3) + ", macro F1 " +
        fmt(ev.macro_f1, 3) + ", balanced accuracy " + fmt(ev.balanced_accuracy, 3)),
      el("div", { class: "evaluation-body" },
        await image("/evaluations/" + ev.evaluation_id + "/confusion.png",
          "confusion matrix of evaluation " + ev.evaluation_id, "confusion"),
        perClassTable(ev)),
      await gallery(ev))));
  document.getElementById("curves").replaceChildren(curves);
  const list = document.getElementById("evaluations");
  list.replaceChildren(...evaluations);
  if (!evaluations.length) list.append(el("p", { class: "muted" }, "not evaluated yet"));
  section.hidden = false;
  modelSignature = signature;
  old.forEach((url) => URL.revokeObjectURL(url));
}

let busy = false;
async function refresh() {
  if (busy) return;
  busy = true;
  const problem = document.getElementById("problem");
  try {
    const [requests, registry] = await Promise.all([call("/api/requests"), call("/models")]);
    document.getElementById("login").hidden = true;
    document.getElementById("content").hidden = false;
    drawRequests(requests);
    drawLeaderboard(registry.models);
    if (selected !== null) await drawModel(await call("/models/" + selected), requests.requests);
    problem.hidden = true;
    document.getElementById("updated").textContent =
      "updated " + new Date().toLocaleTimeString() + " · every " + POLL_MS / 1000 + " s";
  } catch (e) {
    if (e instanceof Unauthorized) {
      document.getElementById("login").hidden = false;
      document.getElementById("content").hidden = true;
      document.getElementById("updated").textContent = "token needed";
    } else {
      problem.textContent = "could not refresh: " + e.message;
      problem.hidden = false;
    }
  } finally {
    busy = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  takeTokenFromAddress();
  document.getElementById("login").addEventListener("submit", (event) => {
    event.preventDefault();
    token = document.getElementById("token").value.trim();
    sessionStorage.setItem(TOKEN_KEY, token);
    modelSignature = "";
    refresh();
  });
  refresh();
  setInterval(refresh, POLL_MS);
});
