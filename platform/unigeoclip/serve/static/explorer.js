// The UniGeoCLIP map explorer: a page over the service's own API (/v1/search, /v1/geolocate, /v1/items).
// Plain JavaScript and the vendored Leaflet: nothing is loaded from another host, so it works offline.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "unigeoclip-api-key";
const THUMBS = 8; // thumbnails shown for a map click: half aerial tiles, half DSM patches

const map = L.map("map", { worldCopyJump: true, minZoom: 1, maxZoom: 10 }).setView([20, 0], 2);
L.tileLayer("tiles/{z}/{x}/{y}.png", {
  maxNativeZoom: 5, maxZoom: 10, noWrap: false,
  attribution: "NASA Blue Marble NG (served by this service)",
}).addTo(map);
graticule(30).addTo(map);
const hits = L.layerGroup().addTo(map);
let objectUrls = [];

function graticule(step) {
  const lines = L.layerGroup();
  const style = { color: "#ffffff", weight: 0.6, opacity: 0.45, interactive: false, className: "graticule" };
  for (let lat = -90 + step; lat < 90; lat += step) {
    lines.addLayer(L.polyline([[lat, -180], [lat, 180]], style));
  }
  for (let lon = -180; lon <= 180; lon += step) {
    lines.addLayer(L.polyline([[-85, lon], [85, lon]], style));
  }
  return lines;
}

// -- talking to the service ------------------------------------------------------------------------

function apiKey() { return sessionStorage.getItem(KEY_STORE); }

function askForKey(message) {
  $("key-message").textContent = message;
  $("key-box").hidden = false;
  $("key").focus();
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function call(path, init = {}) {
  const headers = new Headers(init.headers || {});
  const key = apiKey();
  if (key) headers.set("X-API-Key", key);
  const response = await fetch(path, { ...init, headers });
  if (response.ok) return response;
  let message = `${response.status} ${response.statusText}`;
  try { message = (await response.json()).error || message; } catch (_) { /* not JSON: keep the status line */ }
  if (response.status === 401) {
    askForKey(key ? `The API key was refused (${message}). Check it and enter it again.`
                  : "This service needs an API key: enter it to search.");
  }
  throw new ApiError(response.status, message);
}

async function postJson(path, body) {
  const response = await call(path, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  return response.json();
}

let itemsReadable = true; // false when the service has no sample store (explorer.json says)

async function itemText(sampleId) {
  if (!itemsReadable) return null;
  try {
    return (await (await call(`v1/items/${encodeURIComponent(sampleId)}`)).json()).text;
  } catch (err) {
    return `(text unavailable: ${err.message})`;
  }
}

async function itemImage(sampleId, modality) {
  const blob = await (await call(`v1/items/${encodeURIComponent(sampleId)}/${modality}`)).blob();
  const url = URL.createObjectURL(blob);
  objectUrls.push(url);
  return url;
}

// -- what the page sends ---------------------------------------------------------------------------

function filters() {
  const out = {};
  if ($("bbox").checked) {
    const b = map.getBounds();
    const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
    const wide = b.getEast() - b.getWest() >= 360;
    out.bbox = [clamp(b.getSouth(), -90, 90), wide ? -180 : wrapLon(b.getWest()),
                clamp(b.getNorth(), -90, 90), wide ? 180 : wrapLon(b.getEast())];
  }
  const text = $("years").value.trim();
  if (text) {
    const years = text.split(/[\s,]+/).filter(Boolean).map(Number);
    if (years.some((y) => !Number.isInteger(y))) throw new ApiError(0, `years: "${text}" is not a list of years`);
    out.year = years.length === 1 ? years[0] : years;
  }
  return out;
}

function searchBody(query, targets) {
  const k = Number($("k").value);
  if (!Number.isInteger(k) || k < 1) throw new ApiError(0, "k must be a whole number of at least 1");
  const body = { query, k, filters: filters() };
  if (targets) body.targets = targets;
  return body;
}

function chosenTargets() { return $("target").value ? [$("target").value] : null; }

// -- what the page shows ---------------------------------------------------------------------------

function say(message, isError = false) {
  $("status").textContent = message;
  $("status").classList.toggle("error", isError);
}

function clearResults() {
  hits.clearLayers();
  $("results").replaceChildren();
  $("thumbs").replaceChildren();
  objectUrls.forEach((u) => URL.revokeObjectURL(u));
  objectUrls = [];
}

// Leaflet's longitudes run past +-180 on the world's copies; the API wants [-180, 180).
function wrapLon(lon) { return ((((lon + 180) % 360) + 360) % 360) - 180; }

function fmt(x, digits = 3) { return Number(x).toFixed(digits); }

function showHits(list) {
  list.forEach((hit, i) => {
    const icon = L.divIcon({ className: i === 0 ? "hit-marker best" : "hit-marker", iconSize: [16, 16] });
    const marker = L.marker([hit.lat_deg, hit.lon_deg], { icon, title: `${i + 1}. ${hit.sample_id}` }).addTo(hits);
    const li = document.createElement("li");
    li.innerHTML = `<span class="score"></span> <span class="where"></span><br><span class="text"></span>`;
    li.querySelector(".score").textContent = fmt(hit.score);
    li.querySelector(".where").textContent =
      `${hit.modality} · ${fmt(hit.lat_deg, 2)}, ${fmt(hit.lon_deg, 2)} · ${hit.year}`;
    li.addEventListener("click", () => { map.setView([hit.lat_deg, hit.lon_deg], Math.max(map.getZoom(), 5)); marker.openPopup(); });
    $("results").appendChild(li);
    itemText(hit.sample_id).then((text) => {
      li.querySelector(".text").textContent = text || "(no stored text)";
      marker.bindPopup(popupNode(hit, text));
    });
  });
}

function popupNode(hit, text) {
  const div = document.createElement("div");
  const head = document.createElement("b");
  head.textContent = `score ${fmt(hit.score)} · ${hit.modality} · ${hit.year}`;
  const body = document.createElement("p");
  body.textContent = text || "(no stored text)";
  const id = document.createElement("small");
  id.textContent = hit.sample_id;
  div.append(head, body, id);
  return div;
}

async function showThumbs(list) {
  if (!itemsReadable) return;
  for (const hit of list) {
    const figure = document.createElement("figure");
    const img = document.createElement("img");
    img.alt = `${hit.modality} of ${hit.sample_id}`;
    const caption = document.createElement("figcaption");
    caption.textContent = `${hit.modality} · ${fmt(hit.score)}`;
    figure.append(img, caption);
    $("thumbs").appendChild(figure);
    try {
      img.src = await itemImage(hit.sample_id, hit.modality);
    } catch (err) {
      caption.textContent = `${hit.modality}: ${err.message}`;
    }
  }
}

async function run(what, work) {
  say(`${what}…`);
  try {
    await work();
  } catch (err) {
    say(err instanceof ApiError ? `${what} failed: ${err.message}` : `${what} failed: ${err}`, true);
    if (!(err instanceof ApiError)) console.error(err);
  }
}

// -- the three ways in -----------------------------------------------------------------------------

$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("q").value.trim();
  if (!text) { say("Type a description first.", true); return; }
  run("Search", async () => {
    const answer = await postJson("v1/search", searchBody({ text }, chosenTargets()));
    clearResults();
    showHits(answer.hits);
    say(`${answer.hits.length} places match "${text}" (model ${answer.model_version}).`);
    if (answer.hits.length) map.fitBounds(L.latLngBounds(answer.hits.map((h) => [h.lat_deg, h.lon_deg])).pad(0.3), { maxZoom: 6 });
  });
});

map.on("click", (event) => {
  const lat = event.latlng.lat;
  const lon = wrapLon(event.latlng.lng);
  run("Nearest tiles", async () => {
    const query = { coords: { lat_deg: lat, lon_deg: lon } };
    const [aerial, dsm] = await Promise.all(["aerial", "dsm"].map((m) => postJson("v1/search", searchBody(query, [m]))));
    clearResults();
    L.marker([lat, lon], { icon: L.divIcon({ className: "geo-marker", iconSize: [22, 22] }) }).addTo(hits);
    const both = [...aerial.hits, ...dsm.hits].sort((a, b) => b.score - a.score);
    showHits(both);
    say(`Nearest aerial tiles and DSM patches to ${fmt(lat, 2)}, ${fmt(lon, 2)}:`);
    await showThumbs([...aerial.hits.slice(0, THUMBS / 2), ...dsm.hits.slice(0, THUMBS / 2)]);
  });
});

async function geolocate(file) {
  if (!/^image\/(png|jpeg)$/.test(file.type)) {
    say(`${file.name} is not a PNG or JPEG image: drop one of those.`, true);
    return;
  }
  await run(`Geolocating ${file.name}`, async () => {
    const b64 = await new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(String(reader.result).split(",", 2)[1]);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(file);
    });
    const kind = $("image-kind").value;
    const input = kind === "street" ? { image_b64: b64, projection: "perspective" } : { image_b64: b64 };
    const answer = await postJson("v1/geolocate", searchBody({ [kind]: input }, chosenTargets() || ["coords"]));
    clearResults();
    showHits(answer.candidates);
    const where = [answer.lat_deg, answer.lon_deg];
    L.circle(where, { radius: answer.radius_m, className: "geo-circle", color: "#3e63dd" }).addTo(hits);
    L.circleMarker(where, {
      radius: 10 + 30 * answer.confidence, className: "geo-confidence", color: "#3e63dd", fillOpacity: 0.15 + 0.5 * answer.confidence,
    }).bindTooltip(`confidence ${fmt(answer.confidence, 2)} within ${answer.radius_m} m`, { permanent: true }).addTo(hits);
    map.setView(where, Math.max(map.getZoom(), 4));
    say(`${file.name}: geolocated to ${fmt(answer.lat_deg, 3)}, ${fmt(answer.lon_deg, 3)} ` +
        `(confidence ${fmt(answer.confidence, 2)} that it lies within ${answer.radius_m} m of there).`);
  });
}

$("file").addEventListener("change", () => { if ($("file").files.length) geolocate($("file").files[0]); });
const mapBox = $("map");
mapBox.addEventListener("dragover", (event) => { event.preventDefault(); mapBox.classList.add("dropping"); });
mapBox.addEventListener("dragleave", () => mapBox.classList.remove("dropping"));
mapBox.addEventListener("drop", (event) => {
  event.preventDefault();
  mapBox.classList.remove("dropping");
  if (event.dataTransfer.files.length) geolocate(event.dataTransfer.files[0]);
});

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = $("key").value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY_STORE, key);
  $("key-box").hidden = true;
  say("Key saved for this tab. Search again.");
});

// The service says whether it needs a key (and its k limit) before the first search.
fetch("explorer.json").then((r) => r.json()).then((settings) => {
  $("k").max = settings.max_k;
  if (settings.api_key_required && !apiKey()) askForKey("This service needs an API key: enter it to search.");
  itemsReadable = settings.items;
  if (!settings.items) say("This service has no sample store: hits show without thumbnails or texts.");
}).catch((err) => say(`The service did not answer: ${err}`, true));
