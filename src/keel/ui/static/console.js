// Keel console: confirmations, live refresh of the overview, reload of pending pages.
// Everything works without this file; it only adds comfort.
"use strict";

document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

function startLive(box) {
  const region = document.getElementById(box.getAttribute("data-live"));
  let timer = null;
  async function refresh() {
    try {
      const response = await fetch(window.location.href, { credentials: "same-origin" });
      if (!response.ok) return;
      const doc = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = doc.getElementById(region.id);
      if (fresh) region.replaceChildren(...fresh.childNodes);
    } catch (error) {
      // A failed refresh leaves the current figures in place; the next tick tries again.
    }
  }
  box.addEventListener("change", () => {
    if (box.checked) {
      refresh();
      timer = window.setInterval(refresh, 10000);
    } else if (timer !== null) {
      window.clearInterval(timer);
      timer = null;
    }
  });
}

document.querySelectorAll("[data-live]").forEach(startLive);

document.querySelectorAll("[data-reload]").forEach((element) => {
  const seconds = Number(element.getAttribute("data-reload")) || 2;
  window.setTimeout(() => window.location.reload(), seconds * 1000);
});
