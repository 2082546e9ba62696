// caja's service worker (scope /caja/): keeps what the POS needs to sell without the server — the offline sale
// screen, its scripts and styles, and the register's data (catalogue, offline rule, session, cashier) as the
// server last gave them — and serves the offline sale screen when the server cannot be reached or answers that
// its database is down (5xx). Online, every request goes to the server first: nothing is served stale while the
// server answers.
"use strict";

var CACHE = "caja-offline-v1";
var OFFLINE_PAGE = "/caja/sin-conexion";
var DATA = "/caja/sin-conexion/datos";
var SHELL = [
  OFFLINE_PAGE,
  "/static/css/caja.css",
  "/static/js/caja.js",
  "/static/js/connection.js",
  "/static/js/offline-queue.js",
  "/static/js/offline-pos.js",
  "/static/vendor/htmx.min.js",
];

function store(url) {
  // One by one, so that one failure (the server went away meanwhile) keeps what was already cached.
  return fetch(url, { credentials: "same-origin", cache: "no-store" }).then(function (response) {
    var type = response.headers.get("content-type") || "";
    var wanted = url === DATA ? type.indexOf("application/json") === 0 : true;
    if (!response.ok || response.redirected || !wanted) return false;
    return caches.open(CACHE).then(function (cache) { return cache.put(url, response); }).then(function () { return true; });
  }).catch(function () { return false; });
}

// The register's data is refreshed at every sale screen load (a new session, a new price); the screen's files only
// every few minutes (they change with a release).
var SHELL_EVERY_MS = 5 * 60 * 1000;
var shellStoredAt = 0;

function refresh() {
  var urls = [DATA];
  if (Date.now() - shellStoredAt > SHELL_EVERY_MS) urls = SHELL.concat(urls);
  return Promise.all(urls.map(store)).then(function (done) {
    var ok = done.every(Boolean);
    if (ok && urls.length > 1) shellStoredAt = Date.now();
    return ok;
  });
}

self.addEventListener("install", function (event) {
  event.waitUntil(refresh().then(function () { return self.skipWaiting(); }));
});

self.addEventListener("activate", function (event) {
  event.waitUntil(
    caches.keys().then(function (names) {
      return Promise.all(names.filter(function (n) { return n !== CACHE; }).map(function (n) { return caches.delete(n); }));
    }).then(function () { return self.clients.claim(); })
  );
});

// The sale screen asks for a refresh each time it loads (the catalogue, the rule or the session may have changed)
// and is told when everything is stored.
self.addEventListener("message", function (event) {
  if (event.data !== "refresh") return;
  var port = event.ports && event.ports[0];
  event.waitUntil(refresh().then(function (ok) { if (port) port.postMessage(ok ? "ready" : "partial"); }));
});

function fromCache(url, marked) {
  return caches.open(CACHE).then(function (cache) { return cache.match(url); }).then(function (cached) {
    if (!cached || !marked) return cached;
    return cached.blob().then(function (body) {
      var headers = new Headers(cached.headers);
      headers.set("X-Caja-Sin-Conexion", "1");
      return new Response(body, { status: 200, headers: headers });
    });
  });
}

function serverAnswered(response) {
  return response && response.status < 500;
}

self.addEventListener("fetch", function (event) {
  var request = event.request;
  if (request.method !== "GET") return;
  var url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  var path = url.pathname;
  if (path === DATA) {
    event.respondWith(
      fetch(request).then(function (response) {
        if (serverAnswered(response)) {
          var type = response.headers.get("content-type") || "";
          if (response.ok && !response.redirected && type.indexOf("application/json") === 0) {
            var copy = response.clone();
            caches.open(CACHE).then(function (cache) { cache.put(DATA, copy); });
          }
          return response;
        }
        return fromCache(DATA, true).then(function (cached) { return cached || response; });
      }, function () {
        return fromCache(DATA, true).then(function (cached) { return cached || Response.error(); });
      })
    );
    return;
  }
  if (request.mode === "navigate" && path.indexOf("/caja/") === 0) {
    event.respondWith(
      fetch(request).then(function (response) {
        if (serverAnswered(response)) return response;
        return fromCache(OFFLINE_PAGE, false).then(function (cached) { return cached || response; });
      }, function () {
        return fromCache(OFFLINE_PAGE, false).then(function (cached) { return cached || Response.error(); });
      })
    );
    return;
  }
  if (SHELL.indexOf(path) >= 0) {
    event.respondWith(
      fetch(request).then(function (response) {
        if (serverAnswered(response)) return response;
        return fromCache(path, false).then(function (cached) { return cached || response; });
      }, function () {
        return fromCache(path, false).then(function (cached) { return cached || Response.error(); });
      })
    );
  }
});
