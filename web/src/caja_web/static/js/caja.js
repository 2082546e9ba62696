// caja: small helpers — on-screen keypads, POS keyboard shortcuts, live sum of a denomination count.
(function () {
  "use strict";
  document.addEventListener("click", function (ev) {
    var key = ev.target.closest("[data-key]");
    if (!key) return;
    var pad = key.closest("[data-keypad-for]");
    var input = pad && document.getElementById(pad.getAttribute("data-keypad-for"));
    if (!input) return;
    var k = key.getAttribute("data-key");
    if (k === "clear") input.value = input.value.slice(0, -1);
    else if (!input.maxLength || input.maxLength < 0 || input.value.length < input.maxLength) input.value += k;
    input.dispatchEvent(new Event("input", { bubbles: true }));
    input.focus();
  });
  // A key does what a tap could do, no more: what the screen greys out and leaves untappable (the product keys
  // while a sale is on its pay screen, or while «Devuelva al cliente…» waits for «Siguiente venta»; Cobrar on a
  // register that cannot sell) is not pressed by its shortcut either.
  function untappable(el) {
    return getComputedStyle(el).pointerEvents === "none";
  }
  // Keyboard shortcuts: any element with data-shortcut="F2" (or a single key) is clicked on that key,
  // unless the user is typing in a field (Escape and function keys work everywhere).
  document.addEventListener("keydown", function (ev) {
    var typing = /^(INPUT|TEXTAREA|SELECT)$/.test((ev.target && ev.target.tagName) || "");
    var name = ev.key;
    if (typing && !/^(F\d+|Escape)$/.test(name)) return;
    var el = document.querySelector('[data-shortcut="' + CSS.escape(name) + '"]');
    if (!el || untappable(el)) return;
    ev.preventDefault();
    if (el.tagName === "INPUT") el.focus(); else el.click();
  });
  // Product search on the sale screen: typing filters the keys (case and accents ignored, every word must
  // match the product's or its category's name); Enter adds the first product shown and clears the search,
  // the arrow keys walk the results, Escape clears (and leaves the field when it was already empty).
  function plain(text) {
    return text.normalize("NFD").replace(/[\u0300-\u036f]/g, "").toLowerCase().trim();
  }
  function shownKeys() {
    return Array.prototype.filter.call(document.querySelectorAll("#keys .qk"), function (k) { return !k.hidden; });
  }
  function filterKeys(query) {
    var words = plain(query).split(/\s+/).filter(Boolean);
    var shown = 0;
    document.querySelectorAll("#keys .key-group").forEach(function (group) {
      var any = false;
      group.querySelectorAll(".qk").forEach(function (k) {
        var text = k.getAttribute("data-search") || "";
        var match = words.every(function (w) { return text.indexOf(w) >= 0; });
        k.hidden = !match;
        if (match) any = true, shown += 1;
      });
      group.hidden = !any;
    });
    var empty = document.getElementById("search-empty");
    if (empty) empty.hidden = shown > 0;
  }
  document.addEventListener("input", function (ev) {
    if (ev.target.id === "product-search") filterKeys(ev.target.value);
  });
  document.addEventListener("keydown", function (ev) {
    var search = document.getElementById("product-search");
    if (!search) return;
    var onKey = ev.target.classList && ev.target.classList.contains("qk");
    if (ev.target !== search && !onKey) return;
    var keys = shownKeys();
    var at = onKey ? keys.indexOf(ev.target) : -1;
    if (ev.key === "Enter" && ev.target === search) {
      ev.preventDefault();
      if (keys.length && !untappable(keys[0])) keys[0].click();
      search.value = "";
      filterKeys("");
    } else if (ev.key === "ArrowDown" || (onKey && ev.key === "ArrowRight")) {
      ev.preventDefault();
      if (keys.length) keys[Math.min(keys.length - 1, at + 1)].focus();
    } else if (onKey && (ev.key === "ArrowUp" || ev.key === "ArrowLeft")) {
      ev.preventDefault();
      if (at <= 0) search.focus(); else keys[at - 1].focus();
    } else if (ev.key === "Escape" && ev.target === search) {
      if (search.value) { search.value = ""; filterKeys(""); } else search.blur();
    } else if (onKey && ev.key === "Escape") {
      search.focus();
    }
  });
  // The payment panel polls every second; it holds still while the cashier types in one of its forms, has
  // a section open, or was just shown an error (for 15 s), so a poll never wipes what the cashier is doing.
  var holdUntil = 0;
  function markHold() {
    if (document.querySelector("#panel [data-hold]")) holdUntil = Date.now() + 15000;
  }
  window.cajaShouldPoll = function () {
    var panel = document.getElementById("panel");
    if (!panel) return true;
    var active = document.activeElement;
    if (active && panel.contains(active) && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName)) return false;
    if (panel.querySelector("details[open]")) return false;
    return !(panel.querySelector("[data-hold]") && Date.now() < holdUntil);
  };
  // Only what the panel itself shows starts the hold: the status bar's refresh (every 2 s) renewed it for as long
  // as the message stayed, and the panel, refreshed no more, kept the message (and EN DUDA) after the sale was paid.
  document.addEventListener("htmx:afterSwap", function (ev) {
    var panel = document.getElementById("panel");
    if (panel && ev.target && ev.target.nodeType === 1 && panel.contains(ev.target)) markHold();
  });
  // What a swap brings is live as soon as it is on screen. htmx wires its buttons (hx-post…) only when the swap
  // settles, a moment later (longer on a busy tablet): a tap in between — «Reintentar con tarjeta» the instant
  // «NO SE COBRÓ» shows — did nothing at all. The new content is wired at once here (htmx skips it at the
  // settle). Only what came in: the swap's target itself keeps what htmx holds on it (the taps queued on #panel).
  document.addEventListener("htmx:afterSwap", function (ev) {
    var swapped = ev.target;
    if (!window.htmx || !swapped || !swapped.isConnected) return;
    Array.prototype.forEach.call(swapped.children, function (child) { window.htmx.process(child); });
    // What it asks to have the focus has it at once too. htmx gives it at the settle; until then the focus stays
    // where htmx put it back, on the new element of the same id: «Reintentar con tarjeta» after «NO SE COBRÓ»,
    // where a stray Enter on a busy tablet charged the card again.
    var wanted = swapped.querySelector("[autofocus]");
    if (wanted) wanted.focus();
  });
  // A tap on the panel while one of the panel's own polls is on its way goes at once: the poll is given up (the
  // next one comes a second later). Left waiting behind the poll, the tap was lost when the poll's answer replaced
  // the button it was made on: «Cancelar cobro» tapped while «Esperando al terminal» refreshed did nothing. A tap
  // made while another tap is on its way still waits, and is dropped when that answer replaces its button: that
  // is a double tap.
  function isPoll(elt) {
    return !!(elt && elt.getAttribute && /^every /.test(elt.getAttribute("hx-trigger") || ""));
  }
  // The poll is known by its own request, not by its end event: a poll whose element a swap from outside the panel
  // had replaced (a waiting sale's chip, another tab's change) ends without that event reaching the page, and the
  // POS then took every later tap, a double tap too, for a tap made during a poll.
  function requestElt(ev) { return ev.detail && ev.detail.requestConfig && ev.detail.requestConfig.elt; }
  var panelPoll = null;
  document.addEventListener("htmx:beforeRequest", function (ev) {
    var elt = requestElt(ev), panel = document.getElementById("panel");
    if (isPoll(elt) && panel && panel.contains(elt)) panelPoll = ev.detail.xhr || null;
  });
  function pollOnItsWay() {
    return !!panelPoll && panelPoll.readyState > 0 && panelPoll.readyState < 4; // sent, not answered nor given up
  }
  document.addEventListener("htmx:confirm", function (ev) {
    var elt = ev.detail && ev.detail.elt;
    if (!pollOnItsWay() || !elt || isPoll(elt) || !elt.closest || !elt.closest("#panel, #keys")) return;
    var poll = panelPoll;
    panelPoll = null;
    poll.abort(); // the panel's request on its way is that poll: it is dropped (htmx then sends this tap)
  });
  // A poll marked data-poll-holds is skipped while the panel holds (the page runs no inline script or eval).
  document.addEventListener("htmx:confirm", function (ev) {
    var elt = ev.detail && ev.detail.elt;
    if (elt && elt.hasAttribute && elt.hasAttribute("data-poll-holds") && !window.cajaShouldPoll()) ev.preventDefault();
  });
  // A form or button with data-confirm asks before it is sent; a data-print-page button prints the page.
  document.addEventListener("submit", function (ev) {
    var from = ev.submitter && ev.submitter.getAttribute("data-confirm") ? ev.submitter : ev.target;
    var question = from.getAttribute && from.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { ev.preventDefault(); ev.stopImmediatePropagation(); }
  }, true);
  document.addEventListener("click", function (ev) {
    if (ev.target.closest && ev.target.closest("[data-print-page]")) window.print();
  });
  // A product tapped into the cart: the cart shows its newest line (on a phone the cart scrolls).
  document.addEventListener("htmx:afterSwap", function (ev) {
    var from = ev.detail.requestConfig && ev.detail.requestConfig.elt;
    if (!from || !from.classList || !from.classList.contains("qk")) return;
    var last = document.querySelector("#cart .cart-lines li:last-child");
    if (last) last.scrollIntoView({ block: "nearest" });
  });
  // A form opened on the panel (discount, tip, split, void) shows its primary action at once: the panel scrolls
  // (within itself, as little as needed) so the form's submit button is in sight; so does one that comes back
  // open with an error. The cashier never scrolls to find Aplicar, Recibir efectivo or Anular.
  function showAction(details) {
    if (!details || !details.open) return;
    var buttons = details.querySelectorAll("form button[type=submit]");
    var action = buttons.length ? buttons[buttons.length - 1] : null;
    if (!action) return;
    var summary = details.querySelector("summary");
    if (summary) summary.scrollIntoView({ block: "nearest" });
    action.scrollIntoView({ block: "nearest" });
  }
  document.addEventListener("toggle", function (ev) {
    var d = ev.target;
    if (d && d.tagName === "DETAILS" && d.open && d.closest("#panel") && !d.classList.contains("tech")) showAction(d);
  }, true);
  document.addEventListener("htmx:afterSwap", function () {
    var d = document.querySelector("#panel details[open]:not(.tech) .field.invalid");
    if (d) showAction(d.closest("details"));
  });
  // The sale screen's status poll (#pos-status) may reload the panel when the server's state moved on (another
  // tab changed the cart). Its answer is dropped when this tab itself acted meanwhile: that answer describes a
  // state this tab is already showing.
  var epoch = 0, statusEpoch = -1, busy = 0;
  function isStatus(ev) { return ev.detail && ev.detail.elt && ev.detail.elt.id === "pos-status"; }
  document.addEventListener("htmx:beforeRequest", function (ev) {
    if (isStatus(ev)) { statusEpoch = epoch; return; }
    epoch += 1; busy += 1;
  });
  document.addEventListener("htmx:afterRequest", function (ev) { if (!isStatus(ev)) { busy = Math.max(0, busy - 1); epoch += 1; } });
  document.addEventListener("htmx:beforeSwap", function (ev) {
    if (isStatus(ev) && (statusEpoch !== epoch || busy > 0)) ev.detail.shouldSwap = false;
  });
  // Cobrar, + or − tapped while a product (or another +/−) tap is still on its way: the tap is kept and applied
  // once the cart has come back, so the sale charged includes that product. (Left to htmx's queue, the tap
  // would be dropped: the cart's answer replaces the button the queued request belonged to.) The Cobrar
  // button of an empty cart takes the tap too while the first product is on its way.
  var cartChanges = 0, waiting = [];
  function isCartChange(ev) {
    var path = ev.detail && ev.detail.requestConfig && ev.detail.requestConfig.path;
    return !!path && /\/caja\/venta\/(item|linea|libre)$/.test(path);
  }
  function markCheckoutWaiting() {
    var button = document.getElementById("checkout");
    if (!button) return;
    button.disabled = false;
    if (waiting.indexOf("#checkout") >= 0) button.setAttribute("aria-busy", "true"), button.classList.add("waiting");
  }
  function selectorFor(button) {
    if (button.id === "checkout") return "#checkout";
    var li = button.closest("li[data-line]");
    var label = button.getAttribute("aria-label");
    return li && label ? 'li[data-line="' + li.getAttribute("data-line") + '"] button[aria-label="' + label + '"]' : null;
  }
  document.addEventListener("htmx:beforeRequest", function (ev) {
    if (isCartChange(ev)) { cartChanges += 1; markCheckoutWaiting(); }
  });
  document.addEventListener("htmx:afterRequest", function (ev) {
    if (!isCartChange(ev)) return;
    cartChanges = Math.max(0, cartChanges - 1);
    if (!ev.detail.successful) waiting = []; // the cart said no: the cashier sees why before going on
  });
  document.addEventListener("click", function (ev) {
    var button = ev.target.closest && ev.target.closest("#checkout, #cart li[data-line] button[hx-post]");
    if (!button || cartChanges === 0) return;
    var selector = selectorFor(button);
    if (!selector) return;
    ev.preventDefault();
    ev.stopImmediatePropagation();
    if (selector !== "#checkout" || waiting.indexOf(selector) < 0) waiting.push(selector);
    markCheckoutWaiting();
  }, true);
  document.addEventListener("htmx:afterSettle", function () {
    if (!waiting.length || cartChanges > 0) return;
    var button = document.querySelector("#cart " + waiting.shift());
    if (button && !button.disabled) button.click();
    else waiting = [];
  });
  // A product's modifier chooser from the keyboard: 1…9 tick or untick the nth modifier, Enter adds the product
  // with what is ticked, Escape goes back to the cart (its Cancelar button). It takes the focus when shown.
  document.addEventListener("htmx:afterSettle", function () {
    var first = document.querySelector("#modifier-form input[name=modifier_id]");
    if (first && !first.closest("#modifier-form").contains(document.activeElement)) first.focus();
  });
  // A group of modifiers ("Tamaño": simple / doble) is one choice: ticking one unticks the others of its group.
  function oneOfGroup(box) {
    var group = box.getAttribute("data-group");
    if (!box.checked || !group || !box.form) return;
    box.form.querySelectorAll("input[name=modifier_id][data-group]").forEach(function (other) {
      if (other !== box && other.getAttribute("data-group") === group) other.checked = false;
    });
  }
  document.addEventListener("change", function (ev) {
    if (ev.target && ev.target.name === "modifier_id") oneOfGroup(ev.target);
  }, true);
  document.addEventListener("keydown", function (ev) {
    var form = document.getElementById("modifier-form");
    if (!form) return;
    var t = ev.target;
    var inForm = form.contains(t);
    var idle = t === document.body || t.id === "product-search" || (t.classList && t.classList.contains("qk"));
    if (!inForm && !idle) return;
    var boxes = form.querySelectorAll("input[name=modifier_id]");
    if (/^[1-9]$/.test(ev.key) && boxes[+ev.key - 1]) {
      ev.preventDefault();
      ev.stopImmediatePropagation(); // not a product's key while the chooser is open
      boxes[+ev.key - 1].checked = !boxes[+ev.key - 1].checked;
      oneOfGroup(boxes[+ev.key - 1]);
      boxes[+ev.key - 1].focus();
    } else if (ev.key === "Enter" && (t === document.body || (t.id === "product-search" && !t.value) || (inForm && t.type === "checkbox"))) {
      ev.preventDefault();
      ev.stopImmediatePropagation();
      form.requestSubmit();
    }
  }, true);
  document.addEventListener("DOMContentLoaded", markHold);
  function sumDenoms(form) {
    var total = 0;
    form.querySelectorAll("input[data-denom]").forEach(function (inp) {
      var n = parseInt(inp.value || "0", 10);
      if (n > 0) total += n * parseInt(inp.getAttribute("data-denom"), 10);
    });
    var out = form.querySelector("[data-denom-total]");
    if (out) out.textContent = "$" + total.toLocaleString("es-CL");
    var target = form.querySelector("[data-denom-target]");
    if (target && total > 0) target.value = total;
  }
  document.addEventListener("input", function (ev) {
    if (ev.target.matches && ev.target.matches("input[data-denom]")) sumDenoms(ev.target.form);
  });
  // A count form that comes back filled in (a refused close, open or handover keeps what was typed) shows its
  // total at once, not $0 until the next key.
  function sumCounts(root) {
    var forms = root.matches && root.matches("form") ? [root] : Array.prototype.slice.call(root.querySelectorAll("form"));
    forms.forEach(function (form) { if (form.querySelector("input[data-denom]")) sumDenoms(form); });
  }
  document.addEventListener("DOMContentLoaded", function () { sumCounts(document); });
  document.addEventListener("htmx:load", function (ev) { if (ev.target && ev.target.querySelectorAll) sumCounts(ev.target); });
  // The register's printer form: choosing a printer opens its connection settings.
  document.addEventListener("change", function (ev) {
    if (!ev.target.matches || !ev.target.matches("#printer-kind")) return;
    document.querySelectorAll("details.printer-settings").forEach(function (d) {
      d.open = d.getAttribute("data-printer") === ev.target.value;
    });
  });
})();
