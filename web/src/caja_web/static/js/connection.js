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
})();
