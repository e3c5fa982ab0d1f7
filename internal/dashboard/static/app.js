// keyward dashboard: copy buttons. No other script; the pages work without it.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("[data-copy]").forEach(function (btn) {
    btn.addEventListener("click", function () {
      var el = document.getElementById(btn.getAttribute("data-copy"));
      if (!el || !navigator.clipboard) return;
      navigator.clipboard.writeText(el.textContent).then(function () {
        var note = btn.parentElement.querySelector(".copied");
        if (note) note.hidden = false;
      });
    });
  });
});

// Secrets shown once (a token's, an invitation link, recovery codes):
// browsers may keep a page that was left, Cache-Control: no-store or not,
// and show it again from memory on Back, without asking the server, which
// would answer that the secret is gone. So as the page is left, the
// section that holds the secret says that instead.
window.addEventListener("pagehide", function () {
  document.querySelectorAll("[data-once]").forEach(function (el) {
    var p = document.createElement("p");
    p.textContent = el.getAttribute("data-once");
    el.replaceChildren(p);
  });
});

// Passkeys: buttons with data-passkey="register" or "login" run a WebAuthn
// ceremony against data-endpoint + "/begin" and "/finish". The form around
// the button supplies the CSRF token (and a name or next, when it has them).
(function () {
  function toBuf(s) {
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    var bin = atob(s), b = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) b[i] = bin.charCodeAt(i);
    return b.buffer;
  }
  function toB64(buf) {
    var b = new Uint8Array(buf), s = "";
    for (var i = 0; i < b.length; i++) s += String.fromCharCode(b[i]);
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function post(url, form, extra) {
    var body = new URLSearchParams(new FormData(form));
    for (var k in extra) body.set(k, extra[k]);
    return fetch(url, { method: "POST", body: body, credentials: "same-origin" }).then(function (r) {
      var type = r.headers.get("Content-Type") || "";
      if (type.indexOf("application/json") !== 0) {
        // A page, not an answer: the form went stale (signed out
        // elsewhere, an expired form) or the server refused it.
        return { ok: false, error: r.status === 403
          ? "This page has expired (you may have signed out in another tab): reload it and try again."
          : "The server could not answer (" + r.status + "): reload the page and try again." };
      }
      return r.json().then(function (j) { j.ok = r.ok; return j; });
    });
  }
  function run(btn) {
    var form = btn.closest("form"), kind = btn.getAttribute("data-passkey"), base = btn.getAttribute("data-endpoint");
    var out = form.querySelector("#passkey-error");
    function fail(msg) { out.textContent = msg; out.hidden = false; }
    if (!window.PublicKeyCredential) { fail("This browser does not support passkeys."); return; }
    var state;
    post(base + "/begin", form, {}).then(function (j) {
      if (!j.ok) { if (j.redirect) location.assign(j.redirect); throw new Error(j.error); }
      state = j.state;
      var pk = j.options.publicKey;
      pk.challenge = toBuf(pk.challenge);
      if (kind === "register") {
        pk.user.id = toBuf(pk.user.id);
        (pk.excludeCredentials || []).forEach(function (c) { c.id = toBuf(c.id); });
        return navigator.credentials.create({ publicKey: pk });
      }
      (pk.allowCredentials || []).forEach(function (c) { c.id = toBuf(c.id); });
      return navigator.credentials.get({ publicKey: pk });
    }).then(function (cred) {
      var r = cred.response, resp = { clientDataJSON: toB64(r.clientDataJSON) };
      if (kind === "register") {
        resp.attestationObject = toB64(r.attestationObject);
        if (r.getTransports) resp.transports = r.getTransports();
      } else {
        resp.authenticatorData = toB64(r.authenticatorData);
        resp.signature = toB64(r.signature);
        if (r.userHandle) resp.userHandle = toB64(r.userHandle);
      }
      var c = { id: cred.id, rawId: toB64(cred.rawId), type: cred.type, response: resp,
        clientExtensionResults: cred.getClientExtensionResults(), authenticatorAttachment: cred.authenticatorAttachment };
      return post(base + "/finish", form, { state: state, credential: JSON.stringify(c) });
    }).then(function (j) {
      if (!j.ok) throw new Error(j.error);
      location.assign(j.redirect);
    }).catch(function (e) { fail(e && e.message ? e.message : "The passkey did not work."); });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-passkey]").forEach(function (btn) {
      btn.addEventListener("click", function () { run(btn); });
      // Enter in the form's name field submits the form: run the
      // ceremony instead, never a request of the form's own.
      var form = btn.closest("form");
      form.addEventListener("submit", function (e) { e.preventDefault(); run(btn); });
      // The forms stay hidden without this script: a passkey needs it.
      form.hidden = false;
    });
  });
})();
