// caja: the offline sale screen. Same layout and keys as the sale screen (products on the left with their keys,
// the order on the right, F4 Cobrar, F8 Vaciar), built from the register's data the service worker kept: the
// catalogue, the session, the cashier and the register's offline rule as they were when the connection was lost.
// Sales are kept in the device (offline-queue.js) and sent when the server answers again.
// A product with modifiers opens its chooser as on the sale screen (the same ids, so caja.js's keys work: 1–9
// tick, Enter adds, Escape cancels) with the modifiers the device was given; the line's price is the product's
// plus theirs. A product whose modifiers the kept data does not carry (data kept by an older server) is refused
// here: it cannot be sold as online.
(function () {
  "use strict";
  var DATA = "/caja/sin-conexion/datos";
  var POLL_MS = 2000;
  var data = null;
  var online = false;
  var cart = [];
  var view = "cart";
  var choosing = null; // the product whose modifier chooser is open
  var last = null;
  var message = "";
  var synced = 0;

  function $(id) { return document.getElementById(id); }
  function clp(n) { return "$" + Math.round(n).toLocaleString("es-CL"); }
  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function total() { return cart.reduce(function (t, l) { return t + l.unit_price * l.quantity; }, 0); }
  function count() { return cart.reduce(function (t, l) { return t + l.quantity; }, 0); }
  function allows(method) { return data && data.rule.methods.indexOf(method) >= 0; }
  // What the register's offline rule lets this device charge (never more: the server would reject the rest).
  function sellsWith() {
    if (allows("cash") && allows("backup")) return "Se vende en efectivo y con el celular de respaldo";
    if (allows("cash")) return "Se vende en efectivo";
    if (allows("backup")) return "Se vende solo con el celular de respaldo (esta caja no recibe efectivo sin conexión)";
    return "Esta caja no puede cobrar sin conexión";
  }
  function lineName(l) {
    return esc(l.name) + (l.modifiers.length ? ' <span class="muted mods">' + l.modifiers.map(esc).join(", ") + "</span>" : "");
  }
  function alertBox() {
    return message ? '<div class="alert error" role="alert" id="offline-error">' + esc(message) + "</div>" : "";
  }

  function load() {
    return fetch(DATA, { credentials: "same-origin", cache: "no-store" }).then(function (response) {
      var type = response.headers.get("content-type") || "";
      if (!response.ok || type.indexOf("application/json") !== 0) return null;
      var fromDevice = response.headers.get("X-Caja-Sin-Conexion") === "1";
      return response.json().then(function (json) { return { data: json, online: !fromDevice }; });
    }).catch(function () { return null; });
  }

  // ---- the banner --------------------------------------------------------------------------------------------
  function banner() {
    return Promise.all([cajaQueue.count(), cajaQueue.rejected()]).then(function (v) {
      var n = v[0], rejected = v[1];
      var el = $("offline-banner");
      var words = n === 1 ? "1 venta por sincronizar" : n + " ventas por sincronizar";
      if (!online) {
        el.className = "alert error";
        el.innerHTML = "<strong>SIN CONEXIÓN — " + words + "</strong> " + sellsWith() +
          "; las ventas quedan en este equipo y se envían solas al volver la conexión.";
      } else if (n > 0) {
        el.className = "alert warn";
        el.innerHTML = "<strong>Conexión restablecida — sincronizando: " + words + ".</strong>";
      } else {
        el.className = "alert ok";
        el.innerHTML = "<strong>Conexión restablecida.</strong> " +
          (synced ? (synced === 1 ? "1 venta sincronizada. " : synced + " ventas sincronizadas. ") : "") +
          "Todas las ventas de este equipo están en el servidor. " +
          '<a class="btn small" id="back-online" href="/caja/venta" data-shortcut="F1">Volver a la caja <kbd>F1</kbd></a>';
      }
      el.setAttribute("data-pending", String(n));
      var list = $("offline-rejected");
      if (!rejected.length) { list.hidden = true; list.innerHTML = ""; return; }
      list.hidden = false;
      function group(items, title, note) {
        if (!items.length) return "";
        return "<h2>" + title + "</h2><p class=\"muted\">" + note + "</p><ul>" + items.map(function (r) {
          return "<li data-key=\"" + esc(r.key) + "\"><strong>" + clp(r.total) + "</strong> · " +
            esc(r.local_time.slice(11, 16)) + " · " + esc(r.reason) + "</li>";
        }).join("") + "</ul>";
      }
      list.innerHTML =
        group(rejected.filter(function (r) { return !r.late; }), "Ventas rechazadas al sincronizar",
          "Quedan guardadas hasta que un supervisor las resuelva (incidencias de la sesión).") +
        group(rejected.filter(function (r) { return r.late; }), "Ventas recibidas después del cierre",
          "El servidor las recibió, pero la caja ya estaba cerrada: no suman a esa sesión y un supervisor las revisa.");
    });
  }

  // ---- the products ------------------------------------------------------------------------------------------
  function renderKeys() {
    $("offline-register").textContent = data.register.name;
    $("offline-session").textContent = "· sesión #" + data.session.id + " · " + data.cashier.name;
    var n = 0;
    var html = data.categories.map(function (c) {
      var items = data.products.filter(function (p) { return p.category_id === c.id; });
      if (!items.length) return "";
      return '<h2 id="cat-' + c.id + '">' + esc(c.name) + '</h2><div class="quick-keys">' + items.map(function (p) {
        n += 1;
        var key = p.shortcut || (n < 10 ? String(n) : "");
        return '<button class="qk" type="button" data-id="' + p.id + '" data-product="' + esc(p.name) + '"' +
          (key ? ' data-shortcut="' + esc(key) + '"' : "") + '><span class="name">' + esc(p.name) +
          '</span><span class="price">' + clp(p.price) + "</span>" + (key ? "<kbd>" + esc(key) + "</kbd>" : "") + "</button>";
      }).join("") + "</div>";
    }).join("");
    $("offline-keys").innerHTML = html;
  }

  // ---- the panel: order, payment, saved sale -----------------------------------------------------------------
  function renderPanel() {
    var panel = $("panel");
    if (view === "pay") {
      panel.innerHTML = '<div class="panel" id="offline-pay"><div class="panel-head"><h2>Cobrar <span class="muted">' +
        "sin conexión</span></h2></div>" + alertBox() +
        '<div class="panel-body"><ul class="cart-lines" id="pay-items">' + cart.map(function (l) {
          return '<li><span class="q">' + l.quantity + '×</span><span class="n">' + lineName(l) + '</span><span class="t">' + clp(l.unit_price * l.quantity) + "</span></li>";
        }).join("") + "</ul>" +
        (allows("cash") ?
          '<form id="offline-cash-form" class="stack"><label class="field"><span>Efectivo recibido</span>' +
          '<input id="offline-cash" inputmode="numeric" autocomplete="off" placeholder="' + clp(total()) + '"></label>' +
          '<div class="row"><button class="btn" type="button" id="offline-cash-exact">Exacto ' + clp(total()) + "</button>" +
          '<button class="btn ok big" type="submit" id="offline-pay-cash">Pagar en efectivo</button></div></form>' :
          '<p class="alert warn" id="offline-no-cash">La regla sin conexión de esta caja no permite efectivo' +
          (allows("backup") ? ": cobre con el celular de respaldo." : " ni otro medio: la venta espera a que vuelva la conexión.") +
          "</p>") +
        (allows("backup") ?
          '<details class="more" id="offline-backup"><summary class="btn ghost">Celular de respaldo (' + esc(data.rule.backup_name) + ")</summary>" +
          '<form id="offline-backup-form" class="stack"><p class="muted">Cobre ' + clp(total()) + " en el celular de respaldo y anote lo que muestra.</p>" +
          '<label class="field"><span>Código de autorización</span><input name="authorization_code" maxlength="6" autocomplete="off"></label>' +
          '<label class="field"><span>Últimos 4 dígitos</span><input name="last4" maxlength="4" inputmode="numeric" autocomplete="off"></label>' +
          '<label class="field"><span>Marca</span><input name="brand" maxlength="20" placeholder="Visa, Mastercard…"></label>' +
          '<label class="field"><span>Tipo</span><select name="card_type"><option value="débito">Débito</option><option value="crédito">Crédito</option><option value="prepago">Prepago</option></select></label>' +
          '<button class="btn ok" type="submit" id="offline-pay-backup">Registrar cobro en el celular</button></form></details>' : "") +
        '<button class="btn" type="button" id="offline-card" disabled>Tarjeta (terminal integrado)</button>' +
        '<p class="muted" id="offline-card-note">El terminal integrado necesita el servidor: no se puede cobrar con tarjeta sin conexión.</p>' +
        '</div><div class="panel-actions"><div class="total"><span>Total</span><span id="pay-total">' + clp(total()) + "</span></div>" +
        '<div class="pay-buttons"><button class="btn ghost" type="button" id="offline-back" data-shortcut="Escape">Volver al pedido <kbd>Esc</kbd></button></div></div></div>';
      var cash = $("offline-cash");
      if (cash) cash.focus();
      return;
    }
    if (view === "modifiers" && choosing) {
      panel.innerHTML = '<div id="modifier-chooser" class="panel"><div class="panel-head"><h2>' + esc(choosing.name) +
        ' <span class="muted">' + clp(choosing.price) + '</span></h2><p class="muted">Marque los modificadores (ninguno: tal cual; de un grupo, uno) y toque Agregar.</p></div>' +
        '<p class="alert error" id="modifier-error" role="alert" hidden></p>' +
        '<form id="modifier-form" class="stack"><div class="panel-body modifier-list">' + chooserBoxes(choosing.modifiers) +
        '</div><div class="panel-actions"><div class="pay-buttons">' +
        '<button class="btn ghost" type="button" id="modifier-cancel" data-shortcut="Escape">Cancelar <kbd>Esc</kbd></button>' +
        '<button class="btn ok big" type="submit" id="modifier-add">Agregar <kbd>Enter</kbd></button></div></div></form></div>';
      var first = panel.querySelector("input[name=modifier_id]");
      if (first) first.focus();
      return;
    }
    if (view === "saved" && last) {
      panel.innerHTML = '<div class="panel" id="offline-saved"><div class="panel-head"><h2>Venta guardada en el equipo</h2></div>' +
        '<div class="panel-body"><p class="alert ok" id="outcome"><strong>PAGADO — ' + (last.method === "cash" ? "efectivo" : "celular de respaldo") +
        "</strong> " + clp(last.total) + (last.change ? " · vuelto <strong id=\"offline-change\">" + clp(last.change) + "</strong>" : "") +
        '</p><p class="muted">Se enviará al servidor cuando vuelva la conexión. Toque un producto para la siguiente venta.</p></div></div>';
      return;
    }
    panel.innerHTML = '<div id="cart" class="panel"><div class="panel-head"><h2>Pedido <span class="muted" id="cart-count">' +
      count() + (count() === 1 ? " artículo" : " artículos") + "</span></h2></div>" + alertBox() +
      '<div class="panel-body"><ul class="cart-lines">' + (cart.length ? cart.map(function (l, i) {
        return '<li data-line="' + i + '"><button class="btn step" type="button" data-delta="-1" data-index="' + i + '" aria-label="Uno menos">−</button>' +
          '<span class="q">' + l.quantity + '×</span><button class="btn step" type="button" data-delta="1" data-index="' + i + '" aria-label="Uno más">+</button>' +
          '<span class="n">' + lineName(l) + '</span><span class="t">' + clp(l.unit_price * l.quantity) + "</span></li>";
      }).join("") : '<li class="muted empty">Toque un producto para agregarlo.</li>') + "</ul></div>" +
      '<div class="panel-actions"><div class="total"><span>Total</span><span id="cart-total">' + clp(total()) + "</span></div>" +
      '<div class="pay-buttons"><button class="btn ghost" type="button" id="clear-cart" data-shortcut="F8"' + (cart.length ? "" : " disabled") + ">Vaciar <kbd>F8</kbd></button>" +
      '<button class="btn ok big" type="button" id="checkout" data-shortcut="F4"' + (cart.length ? "" : " disabled") + ">Cobrar <kbd>F4</kbd></button></div></div></div>";
  }

  // A product tapped: into the cart, or its chooser first when it has modifiers.
  function tapped(id) {
    var product = data.products.filter(function (p) { return p.id === id; })[0];
    if (!product) return;
    if (view !== "cart") { view = "cart"; last = null; }
    message = "";
    if (!Array.isArray(product.modifiers)) {
      message = product.name + " no se puede vender sin conexión: este equipo no tiene sus modificadores. " +
        "Véndalo cuando vuelva la conexión.";
    } else if (product.modifiers.length) {
      choosing = product;
      view = "modifiers";
    } else {
      add(product, []);
      return;
    }
    renderPanel();
  }

  // The product with the modifiers ticked (their order in the chooser): the same product with other modifiers
  // is another line.
  function add(product, chosen) {
    var ids = chosen.map(function (m) { return m.id; });
    var same = function (l) { return l.product_id === product.id && l.modifier_ids.join(",") === ids.join(","); };
    var line = cart.filter(same)[0];
    if (line) line.quantity = Math.min(999, line.quantity + 1);
    else cart.push({
      product_id: product.id,
      name: product.name,
      unit_price: chosen.reduce(function (p, m) { return p + m.price; }, product.price),
      quantity: 1,
      modifier_ids: ids,
      modifiers: chosen.map(function (m) { return m.name; }),
    });
    view = "cart";
    choosing = null;
    renderPanel();
  }

  // The chooser's boxes as on the sale screen: each group ("Tamaño") first, under its name and whether one must be
  // chosen, then the modifiers of no group.
  function groupsOf(modifiers) {
    var names = [];
    modifiers.forEach(function (m) { if (m.group && names.indexOf(m.group) < 0) names.push(m.group); });
    return names.map(function (g) {
      var options = modifiers.filter(function (m) { return m.group === g; });
      return { name: g, options: options, required: options.some(function (m) { return m.required; }) };
    });
  }
  function chooserBoxes(modifiers) {
    var box = function (m) {
      return '<label class="check modifier" data-modifier="' + esc(m.name) + '"><input type="checkbox" name="modifier_id" value="' + m.id + '"' +
        (m.group ? ' data-group="' + esc(m.group) + '"' : "") + '><span class="n">' + esc(m.name) + '</span><span class="t">' +
        (m.price ? "+" + clp(m.price) : "sin costo") + "</span></label>";
    };
    return groupsOf(modifiers).map(function (g) {
      return '<fieldset class="modifier-group" data-group="' + esc(g.name) + '"' + (g.required ? " data-required" : "") + "><legend><strong>" +
        esc(g.name) + "</strong> — " + (g.required ? "elige 1 (obligatorio)" : "máximo 1") + "</legend>" + g.options.map(box).join("") + "</fieldset>";
    }).join("") + modifiers.filter(function (m) { return !m.group; }).map(box).join("");
  }

  function addChosen(form) {
    var ticked = Array.prototype.map.call(form.querySelectorAll("input[name=modifier_id]:checked"), function (box) {
      return parseInt(box.value, 10);
    });
    var chosen = choosing.modifiers.filter(function (m) { return ticked.indexOf(m.id) >= 0; });
    // A required group left without its choice: the line is not added (the server refuses it too, online).
    var missing = groupsOf(choosing.modifiers).filter(function (g) {
      return g.required && !g.options.some(function (m) { return ticked.indexOf(m.id) >= 0; });
    })[0];
    if (missing) {
      var names = missing.options.map(function (m) { return m.name; });
      var listed = names.length > 1 ? names.slice(0, -1).join(", ") + " o " + names[names.length - 1] : names[0];
      var box = $("modifier-error");
      box.textContent = "Elija " + missing.name + " para " + choosing.name + ": " + listed + ".";
      box.hidden = false;
      return;
    }
    add(choosing, chosen);
  }

  function save(method, extra) {
    var sale = {
      key: cajaQueue.newKey(),
      register_id: data.register.id,
      session_id: data.session.id,
      cashier_id: data.cashier.id,
      local_time: cajaQueue.localTime(),
      method: method,
      // The names stay in the device (to show); the server takes the ids and prices them itself.
      lines: cart.map(function (l) {
        return { product_id: l.product_id, quantity: l.quantity, unit_price: l.unit_price, modifier_ids: l.modifier_ids,
          name: l.name, modifiers: l.modifiers };
      }),
      total: total(),
    };
    // The version of the register's offline rule this device was given: the server checks the sale against it.
    if (data.rule.version) sale.rule_id = data.rule.version;
    Object.keys(extra).forEach(function (k) { sale[k] = extra[k]; });
    return cajaQueue.add(sale).then(function () {
      last = { method: method, total: sale.total, change: method === "cash" && sale.cash_received ? sale.cash_received - sale.total : 0 };
      cart = [];
      view = "saved";
      message = "";
      renderPanel();
      return banner();
    });
  }

  function digits(value) { return String(value || "").replace(/[^0-9]/g, ""); }

  function payCash(received) {
    if (!allows("cash")) return;  // the rule the device keeps does not take cash: the server would reject it
    var amount = received === undefined ? total() : parseInt(digits(received) || "0", 10) || total();
    if (amount < total()) { message = "El efectivo recibido (" + clp(amount) + ") es menor que el total (" + clp(total()) + ")."; renderPanel(); return; }
    save("cash", { cash_received: amount });
  }

  function payBackup(form) {
    var code = (form.authorization_code.value || "").trim().toUpperCase();
    var last4 = (form.last4.value || "").trim();
    var brand = (form.brand.value || "").trim();
    if (!/^[A-Z0-9]{6}$/.test(code)) { message = "El código de autorización debe tener exactamente 6 letras o números."; }
    else if (!/^[0-9]{4}$/.test(last4)) { message = "Los últimos 4 dígitos de la tarjeta deben ser exactamente 4 números."; }
    else if (!/^[A-Za-zÁÉÍÓÚáéíóúñÑ ]{2,20}$/.test(brand)) { message = "Indique la marca de la tarjeta (Visa, Mastercard…): solo su nombre, sin números."; }
    else {
      save("backup", { backup: { authorization_code: code, last4: last4, brand: brand, card_type: form.card_type.value } });
      return;
    }
    renderPanel();
    var details = $("offline-backup");
    if (details) details.open = true;
  }

  document.addEventListener("click", function (ev) {
    var t = ev.target.closest("button, a");
    if (!t || !data) return;
    if (t.classList.contains("qk")) { tapped(parseInt(t.getAttribute("data-id"), 10)); return; }
    if (t.id === "modifier-cancel") { view = "cart"; choosing = null; renderPanel(); return; }
    if (t.hasAttribute("data-delta")) {
      var line = cart[parseInt(t.getAttribute("data-index"), 10)];
      if (!line) return;
      line.quantity += parseInt(t.getAttribute("data-delta"), 10);
      if (line.quantity < 1) cart.splice(cart.indexOf(line), 1);
      renderPanel();
      return;
    }
    if (t.id === "clear-cart") { cart = []; message = ""; renderPanel(); return; }
    if (t.id === "checkout" && cart.length) { view = "pay"; message = ""; renderPanel(); return; }
    if (t.id === "offline-back") { view = "cart"; message = ""; renderPanel(); return; }
    if (t.id === "offline-cash-exact") { payCash(); return; }
  });
  document.addEventListener("submit", function (ev) {
    ev.preventDefault();
    if (ev.target.id === "offline-cash-form") payCash($("offline-cash").value);
    if (ev.target.id === "offline-backup-form") payBackup(ev.target);
    if (ev.target.id === "modifier-form" && choosing) addChosen(ev.target);
  });

  // ---- a card payment the connection was lost in the middle of ----------------------------------------------
  // Until the server answers, nobody knows whether the card was charged: the screen says so, and once the server
  // answers (with no sale of this screen left to send) it goes back to that sale, where the server shows how it
  // ended.
  function cardSale() {
    try { return sessionStorage.getItem("caja:card-sale"); } catch (e) { return null; }
  }
  function cardSaleNote() {
    var id = cardSale();
    var el = $("offline-card-sale");
    if (!id || !/^[0-9]+$/.test(id)) { if (el) el.remove(); return; }
    if (!el) {
      el = document.createElement("p");
      el.id = "offline-card-sale";
      el.className = "alert warn";
      el.setAttribute("role", "status");
      $("offline-status").appendChild(el);
    }
    el.innerHTML = "<strong>Venta #" + id + " con tarjeta: EN DUDA.</strong> Se estaba cobrando cuando se perdió la " +
      "conexión: no la cobre de nuevo ni entregue el pedido. Al volver la conexión la caja muestra si se cobró.";
  }
  function backToCardSale(pending) {
    var id = cardSale();
    if (!id || !/^[0-9]+$/.test(id) || pending > 0 || cart.length || view !== "cart") return false;
    try { sessionStorage.removeItem("caja:card-sale"); } catch (e) { /* nothing kept */ }
    location.assign("/caja/venta/" + id);
    return true;
  }

  // ---- the connection ----------------------------------------------------------------------------------------
  var polling = false;
  function poll() {
    if (polling) return Promise.resolve(); // a slow answer: the next tick asks again
    polling = true;
    return load().then(function (answer) {
      if (answer && answer.online) {
        var back = !online;
        online = true;
        data = answer.data;
        if (back) cajaQueue.markOnline();
        return cajaQueue.sync(answer.data.csrf).then(function (summary) {
          synced += summary.accepted;
          return cajaQueue.count().then(backToCardSale);
        }, function () { online = false; });
      }
      if (online) cajaQueue.markOffline(data.session.id);
      online = false;
    }).then(banner, banner).then(function () { polling = false; }, function () { polling = false; });
  }

  function start() {
    load().then(function (answer) {
      if (!answer) {
        $("offline-banner").className = "alert error";
        $("offline-banner").innerHTML = "<strong>SIN CONEXIÓN</strong> — este equipo no tiene los datos de la caja para vender sin " +
          "conexión (abra la caja en línea una vez en este equipo).";
        return;
      }
      data = answer.data;
      online = answer.online;
      document.body.setAttribute("data-offline-screen", "ready");
      renderKeys();
      renderPanel();
      cardSaleNote();
      var ready = online ? Promise.resolve() : cajaQueue.markOffline(data.session.id);
      return ready.then(poll).then(function () { setInterval(poll, POLL_MS); });
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
