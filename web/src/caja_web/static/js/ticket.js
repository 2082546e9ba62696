// Printable tickets: the page is exactly as wide as the paper (data-paper, in mm) and as long as the
// ticket, so a roll printer feeds no blank paper; the "Imprimir" button; and printing on load when the
// page was opened to print (data-autoprint="1"), which is how the POS's browser printer prints a sale.
(function () {
  "use strict";
  function sizePage() {
    var ticket = document.getElementById("ticket");
    var paper = parseInt(document.body.getAttribute("data-paper") || "0", 10);
    if (!ticket || !paper) return;
    var heightMm = Math.ceil(ticket.getBoundingClientRect().height * 25.4 / 96) + 4;
    var style = document.getElementById("page-size") || document.createElement("style");
    style.id = "page-size";
    style.textContent = "@page { size: " + paper + "mm " + heightMm + "mm; margin: 0 }";
    document.head.appendChild(style);
  }
  document.addEventListener("click", function (ev) {
    if (ev.target.closest("[data-print]")) { sizePage(); window.print(); }
  });
  window.addEventListener("load", function () {
    sizePage();
    if (document.body.getAttribute("data-autoprint") === "1") window.print();
  });
})();
