// caja: the POS follows its connection to the server. The sale screen polls /caja/estado every 2 s; a poll or a
// tap that gets no answer (network down, server stopped) or a 5xx (the database does not answer: 503) means the
// register is offline. The screen says so at once, instead of taps that silently do nothing, and says when the
// connection is back.
(function () {
  "use strict";
  var offline = false;
  var backTimer = null;

  function banner() {
    var el = document.getElementById("connection-banner");
    if (el) return el;
    var status = document.getElementById("pos-status");
    if (!status) return null;
    el = document.createElement("div");
    el.id = "connection-banner";
    el.className = "pos-status no-print";
    el.setAttribute("role", "status");
    el.setAttribute("aria-live", "assertive");
    status.parentNode.insertBefore(el, status);
    return el;
  }

  function show(kind, html) {
    var el = banner();
    if (!el) return;
    el.innerHTML = html ? '<p class="alert ' + kind + '" id="connection-' + kind + '">' + html + "</p>" : "";
  }

  function wentOffline(why) {
    if (backTimer) { clearTimeout(backTimer); backTimer = null; }
    offline = true;
    document.body.setAttribute("data-offline", "");
    show("error", "<strong>SIN CONEXIÓN</strong> — " + why);
    document.dispatchEvent(new CustomEvent("caja:offline", { detail: { why: why } }));
  }

  function cameBack() {
    if (!offline) return;
    offline = false;
    document.body.removeAttribute("data-offline");
    show("ok", "<strong>Conexión restablecida.</strong> Puede seguir vendiendo.");
    document.dispatchEvent(new CustomEvent("caja:online"));
    backTimer = setTimeout(function () { show("", ""); backTimer = null; }, 15000);
  }

  var NO_ANSWER = "el servidor no responde. Revise la red o avise al supervisor.";
  var NO_DATABASE = "la base de datos no responde. Avise al supervisor.";

  document.addEventListener("htmx:sendError", function () { wentOffline(NO_ANSWER); });
  document.addEventListener("htmx:responseError", function (ev) {
    var status = ev.detail && ev.detail.xhr ? ev.detail.xhr.status : 0;
    if (status === 0 || status >= 500) wentOffline(status === 503 ? NO_DATABASE : NO_ANSWER);
  });
  document.addEventListener("htmx:afterRequest", function (ev) {
    var xhr = ev.detail && ev.detail.xhr;
    if (xhr && xhr.status > 0 && xhr.status < 500) cameBack();
  });
  window.cajaIsOffline = function () { return offline; };

  // ---- selling without the server ----------------------------------------------------------------------------
  // The service worker keeps the offline sale screen and this register's data; the sale screen asks it to refresh
  // them at each load and marks itself ready (data-offline-ready) once they are stored. When the server is lost,
  // a ready screen moves to the offline sale screen (served by the service worker from what it kept).
  var onSaleScreen = function () { return !!document.getElementById("pos-status"); };
  function keepRegisterData() {
    return navigator.serviceWorker.ready.then(function (registration) {
      var channel = new MessageChannel();
      channel.port1.onmessage = function (ev) {
        if (ev.data === "ready") document.body.setAttribute("data-offline-ready", "");
      };
      registration.active.postMessage("refresh", [channel.port2]);
    });
  }
  if ("serviceWorker" in navigator && location.pathname.indexOf("/caja/") === 0) {
    navigator.serviceWorker.register("/caja-sw.js", { scope: "/caja/" }).then(function () {
      if (!onSaleScreen()) return;
      return keepRegisterData();
    }).catch(function () { /* no service worker (not a secure origin): the banner still says SIN CONEXIÓN */ });
  }
  // The register's offline rule as the poll gives it (data-offline-rule): when it is not the one the device keeps,
  // the device keeps the rule in force at once, so that what it sells if the connection is lost next follows it.
  var checkedRule = null;
  document.addEventListener("htmx:afterRequest", function (ev) {
    var status = document.getElementById("pos-status");
    if (!isStatusPoll(ev) || !status || !window.caches) return;
    var rule = status.getAttribute("data-offline-rule");
    if (rule === null || rule === checkedRule || !navigator.serviceWorker || !navigator.serviceWorker.controller) return;
    checkedRule = rule;
    caches.match("/caja/sin-conexion/datos").then(function (kept) {
      return kept ? kept.json() : null;
    }).then(function (kept) {
      if (!kept || !kept.rule || kept.rule.fingerprint !== rule) keepRegisterData();
    }).catch(function () { checkedRule = null; });
  });
  // The poll's answer replaces its element (outerHTML): htmx then tells the nearest ancestor still in the page, so
  // the request's own element is the one to look at.
  function isStatusPoll(ev) {
    var d = ev.detail || {};
    var elt = (d.requestConfig && d.requestConfig.elt) || d.elt;
    return !!elt && elt.id === "pos-status";
  }
  // Before leaving, the register's data is asked for: only when the service worker has to answer it from what it
  // kept (the server did not answer, or answered 5xx) is the register really offline; one request that failed on
  // its own changes nothing.
  var probing = false;
  document.addEventListener("caja:offline", function () {
    if (probing || !onSaleScreen() || !document.body.hasAttribute("data-offline-ready") || !navigator.serviceWorker ||
        !navigator.serviceWorker.controller) return;
    probing = true;
    // A card payment on screen when the server was lost (a restart, a crash): the offline screen says it is not
    // known yet whether it charged, and brings the cashier back to it as soon as the server answers.
    var following = document.querySelector("#panel #progress [name=sale]");
    try {
      if (following) sessionStorage.setItem("caja:card-sale", following.value);
      else sessionStorage.removeItem("caja:card-sale");
    } catch (e) { /* no storage: the cashier goes back with "Volver a la caja" */ }
    fetch("/caja/sin-conexion/datos", { credentials: "same-origin", cache: "no-store" }).then(function (response) {
      return response.headers.get("X-Caja-Sin-Conexion") === "1";
    }, function () { return true; }).then(function (lost) {
      probing = false;
      if (lost && offline) location.assign("/caja/sin-conexion");
    });
  });

  // The device's queue: the poll carries how many sales it still holds, and what is left is sent while online.
  var pending = 0, rejected = 0, late = 0, syncing = false;
  function withQueue(work) {
    if (window.cajaQueue) return work(window.cajaQueue);
    if (!onSaleScreen() || !window.indexedDB) return;
    var script = document.createElement("script");
    script.src = "/static/js/offline-queue.js";
    script.onload = function () { work(window.cajaQueue); };
    document.head.appendChild(script);
  }
  function csrf() {
    try { return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["x-csrftoken"] || ""; }
    catch (e) { return ""; }
  }
  var queueShown = false;
  function showQueue() {
    if (offline) return;
    var had = queueShown;
    queueShown = pending > 0 || rejected > 0;
    if (!queueShown) { if (had) show("", ""); return; }
    if (pending > 0) show("warn", "<strong>" + (pending === 1 ? "1 venta sin conexión" : pending + " ventas sin conexión") +
      " por sincronizar</strong> en este equipo: se están enviando.");
    else if (rejected > late) show("warn", "<strong>" + (rejected - late === 1 ? "1 venta sin conexión rechazada" :
      (rejected - late) + " ventas sin conexión rechazadas") + "</strong> al sincronizar: " +
      '<a href="/caja/sin-conexion" id="offline-rejected-link">ver el motivo</a>. Un supervisor las resuelve.');
    else if (late > 0) show("warn", "<strong>" + (late === 1 ? "1 venta sin conexión recibida" : late +
      " ventas sin conexión recibidas") + " después del cierre</strong> de la caja: " +
      '<a href="/caja/sin-conexion" id="offline-rejected-link">ver cuáles</a>. Un supervisor las revisa.');
  }
  function followQueue() {
    withQueue(function (queue) {
      Promise.all([queue.count(), queue.rejected()]).then(function (v) {
        pending = v[0];
        rejected = v[1].length;
        late = v[1].filter(function (r) { return r.late; }).length;
        showQueue();
        if ((pending > 0 || rejected > 0) && !offline && !syncing) {
          syncing = true;
          queue.sync(csrf()).then(function () { syncing = false; }, function () { syncing = false; });
        }
      });
    });
  }
  document.addEventListener("htmx:configRequest", function (ev) {
    if (!ev.detail || !ev.detail.elt || ev.detail.elt.id !== "pos-status" || !window.cajaQueue) return;
    ev.detail.parameters["dispositivo"] = window.cajaQueue.deviceId();
    ev.detail.parameters["pendientes"] = String(pending);
  });
  document.addEventListener("htmx:afterRequest", function (ev) {
    if (isStatusPoll(ev)) followQueue();
  });
  document.addEventListener("DOMContentLoaded", followQueue);
})();
