// Printable tickets: the "Imprimir" button, and printing on load when the page was opened to print
// (data-autoprint="1"), which is how the POS's browser printer prints a sale's ticket.
(function () {
  "use strict";
  document.addEventListener("click", function (ev) {
    if (ev.target.closest("[data-print]")) window.print();
  });
  window.addEventListener("load", function () {
    if (document.body.getAttribute("data-autoprint") === "1") window.print();
  });
})();
