// caja: the sales a device took without the server, kept in IndexedDB until the server has them.
// Each sale has a key generated here, the cashier, the register, the session and the device's local time. The
// queue is sent in order, in batches, to /caja/sin-conexion/sincronizar; the server answers each key once and
// forever (a resent sale gets its first answer), so an interrupted sync is simply sent again. Rejected sales are
// kept here with the server's reason until a supervisor resolves them.
(function () {
  "use strict";
  var NAME = "caja-offline";
  var SYNC_URL = "/caja/sin-conexion/sincronizar";
  // What the server takes of a kept sale and of each of its lines (caja_core.offline.service.OfflineSaleIn and
  // OfflineLine, which refuse anything else): the payload is built from these, so whatever the device keeps
  // for itself (the queue's seq, the server's reason, names to show) never reaches the server.
  var SALE_FIELDS = ["key", "register_id", "session_id", "cashier_id", "local_time", "method", "lines", "total",
    "cash_received", "backup", "rule_id"];
  var LINE_FIELDS = ["product_id", "quantity", "unit_price", "modifier_ids"];

  // A copy of ``item`` with only ``fields`` (those it has); ``nested`` names list fields whose items are picked
  // the same way.
  function pick(item, fields, nested) {
    var out = {};
    fields.forEach(function (name) {
      if (item[name] === undefined) return;
      var inner = nested && nested[name];
      out[name] = inner ? item[name].map(function (x) { return pick(x, inner); }) : item[name];
    });
    return out;
  }

  function open() {
    return new Promise(function (resolve, reject) {
      var req = indexedDB.open(NAME, 1);
      req.onupgradeneeded = function () {
        var db = req.result;
        var queue = db.createObjectStore("queue", { keyPath: "seq", autoIncrement: true });
        queue.createIndex("key", "key", { unique: true });
        db.createObjectStore("rejected", { keyPath: "key" });
        db.createObjectStore("meta");
      };
      req.onsuccess = function () { resolve(req.result); };
      req.onerror = function () { reject(req.error); };
    });
  }

  function run(stores, mode, work) {
    return open().then(function (db) {
      return new Promise(function (resolve, reject) {
        var tx = db.transaction(stores, mode);
        var result;
        Promise.resolve(work(tx, function (value) { result = value; }));
        tx.oncomplete = function () { db.close(); resolve(result); };
        tx.onerror = tx.onabort = function () { db.close(); reject(tx.error); };
      });
    });
  }

  function all(store) {
    return run([store], "readonly", function (tx, done) {
      var req = tx.objectStore(store).getAll();
      req.onsuccess = function () { done(req.result || []); };
    });
  }

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  // The device's local time with its offset: 2026-12-02T01:15:07-03:00.
  function localTime(date) {
    var d = date || new Date();
    var offset = -d.getTimezoneOffset();
    var sign = offset >= 0 ? "+" : "-";
    var abs = Math.abs(offset);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + "T" + pad(d.getHours()) + ":" +
      pad(d.getMinutes()) + ":" + pad(d.getSeconds()) + sign + pad(Math.floor(abs / 60)) + ":" + pad(abs % 60);
  }

  function newKey() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return "k-" + Date.now().toString(36) + "-" + Math.random().toString(36).slice(2);
  }

  function deviceId() {
    var id = localStorage.getItem("caja-device");
    if (!id) { id = newKey(); localStorage.setItem("caja-device", id); }
    return id;
  }

  function getMeta(name) {
    return run(["meta"], "readonly", function (tx, done) {
      var req = tx.objectStore("meta").get(name);
      req.onsuccess = function () { done(req.result); };
    });
  }

  function setMeta(name, value) {
    return run(["meta"], "readwrite", function (tx) {
      if (value === undefined) tx.objectStore("meta").delete(name); else tx.objectStore("meta").put(value, name);
    });
  }

  var syncing = null;

  var api = {
    localTime: localTime,
    newKey: newKey,
    // Sales per sync request (the server takes up to 50).
    batch: 20,
    deviceId: deviceId,
    add: function (sale) {
      return run(["queue"], "readwrite", function (tx) { tx.objectStore("queue").add(sale); });
    },
    pending: function () { return all("queue"); },
    rejected: function () { return all("rejected"); },
    count: function () {
      return run(["queue"], "readonly", function (tx, done) {
        var req = tx.objectStore("queue").count();
        req.onsuccess = function () { done(req.result); };
      });
    },
    // The device lost the server: the period starts now (once) for this session.
    markOffline: function (sessionId) {
      return getMeta("period").then(function (period) {
        if (period && period.ended_at) { delete period.ended_at; return setMeta("period", period); } // not reported yet: it goes on
        if (period) return period;
        return setMeta("period", { session_id: sessionId, started_at: localTime() });
      });
    },
    markOnline: function () {
      return getMeta("period").then(function (period) {
        if (period && !period.ended_at) { period.ended_at = localTime(); return setMeta("period", period); }
      });
    },
    period: function () { return getMeta("period"); },
    // Send the queue (in order), then ask again about rejected sales (a supervisor may have resolved them), then
    // report the offline period. Resolves with a summary; rejects when the server cannot be reached.
    sync: function (csrf) {
      if (syncing) return syncing;
      var summary = { accepted: 0, rejected: 0, reasons: [] };
      function post(sales, period, registerId, unsynced) {
        var body = { device_id: deviceId(), sales: sales };
        if (period) body.period = period;
        if (registerId && unsynced !== undefined) { body.register_id = registerId; body.unsynced = unsynced; }
        return fetch(SYNC_URL, {
          method: "POST",
          credentials: "same-origin",
          headers: { "Content-Type": "application/json", "x-csrftoken": csrf || "" },
          body: JSON.stringify(body),
        }).then(function (response) {
          if (response.status >= 500 || response.status === 0) throw new Error("sin conexión");
          return response.json().then(function (data) {
            if (!response.ok) { var e = new Error(data.message || "rechazado"); e.refused = true; throw e; }
            return data.results || [];
          });
        });
      }
      function apply(items, results) {
        var byKey = {};
        results.forEach(function (r) { byKey[r.key] = r; });
        return run(["queue", "rejected"], "readwrite", function (tx) {
          items.forEach(function (item) {
            var r = byKey[item.key];
            if (!r) return;
            if (r.status === "accepted") {
              summary.accepted += 1;
              if (item.seq !== undefined) tx.objectStore("queue").delete(item.seq);
            } else if (r.status === "rejected" || r.status === "late" || r.status === "conflict") {
              // Kept with the reason until a supervisor resolves it (late: its session was closed before it came;
              // conflict: its key was already received with another content).
              summary.rejected += 1;
              summary.reasons.push(r.reason);
              if (item.seq !== undefined) tx.objectStore("queue").delete(item.seq);
              var kept = Object.assign({}, item, { reason: r.reason, late: r.status === "late" });
              delete kept.seq;
              tx.objectStore("rejected").put(kept);
            } else if (r.status === "resolved") {
              if (item.seq !== undefined) tx.objectStore("queue").delete(item.seq);
              tx.objectStore("rejected").delete(item.key);
            }
          });
        });
      }
      function strip(item) { return pick(item, SALE_FIELDS, { lines: LINE_FIELDS }); }
      function sendQueue() {
        return api.pending().then(function (items) {
          var mine = items.filter(function (i) { return !summary.skipped || summary.skipped.indexOf(i.key) < 0; });
          if (!mine.length) return null;
          var batch = mine.slice(0, api.batch);
          return post(batch.map(strip), null, batch[0].register_id, items.length - batch.length).then(function (results) {
            results.forEach(function (r) {
              // Not received: another cashier's, or held back for now (too many rejected lately). It stays here.
              if (r.status === "not_yours" || r.status === "limited") (summary.skipped = summary.skipped || []).push(r.key);
            });
            return apply(batch, results);
          }).then(sendQueue);
        });
      }
      function recheckRejected() {
        return api.rejected().then(function (items) {
          if (!items.length) return null;
          return post(items.slice(0, api.batch).map(strip)).then(function (results) {
            return apply(items.slice(0, api.batch), results.filter(function (r) { return r.status === "resolved"; }));
          });
        });
      }
      function reportPeriod() {
        return Promise.all([getMeta("period"), api.count()]).then(function (values) {
          var period = values[0];
          if (!period || !period.ended_at || values[1] > 0) return null;
          return post([], period).then(function () { return setMeta("period", undefined); });
        });
      }
      syncing = sendQueue().then(recheckRejected).then(reportPeriod).then(function () { return summary; });
      var done = function () { syncing = null; };
      syncing.then(done, done);
      return syncing;
    },
  };
  window.cajaQueue = api;
})();
