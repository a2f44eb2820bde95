// crmchat inspector: the little the pages need from script. Everything works without it except the
// demo's one-click login and the confirmation before a reset.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // `serve --demo` prints /_crmchat/ui/login#token=...: the fragment never reaches the server or a log; it is
  // taken out of the address bar and history before the form is sent.
  const login = document.getElementById("login-form");
  if (login && location.hash.startsWith("#token=")) {
    const token = decodeURIComponent(location.hash.slice("#token=".length));
    history.replaceState(null, "", location.pathname + location.search);
    if (token) {
      document.getElementById("token").value = token;
      login.submit();
    }
  }

  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }

  for (const select of document.querySelectorAll("select[data-autosubmit]")) {
    select.addEventListener("change", () => select.form.submit());
  }

  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", async () => {
      const input = document.getElementById(button.dataset.copy);
      input.select();
      try {
        await navigator.clipboard.writeText(input.value);
        button.textContent = "Copied";
      } catch {
        button.textContent = "Select and copy";
      }
    });
  }
});
