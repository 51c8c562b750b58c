// The sign-in screen and the password change form.
//
// authenticate() shows the sign-in screen until someone signs in, and when the account
// still holds a one-time password, the change form before anything else. The change form
// is also what the user menu opens ("Change password"), then with a Cancel button.

import { changePassword, signIn, signInProviders, signOut } from "./api.js";

/** A modal dialog the user cannot dismiss with Escape (the sign-in screen, a forced change). */
function keepOpen(dialog, isPending) {
  dialog.addEventListener("cancel", (event) => {
    if (isPending()) event.preventDefault();
  });
  // Chromium closes a modal dialog on a second Escape whatever the page says: reopen it.
  dialog.addEventListener("close", () => {
    if (isPending()) dialog.showModal();
  });
}

function setText(node, text) {
  node.textContent = text || "";
  node.hidden = !text;
}

/** The buttons of redirect sign-in (OpenID Connect): plain links, the browser leaves for the provider. */
async function showProviders(dialog) {
  const box = dialog.querySelector(".sign-in-providers");
  if (box.dataset.loaded) return;
  box.dataset.loaded = "1";
  const providers = await signInProviders();
  box.replaceChildren(
    ...providers.map((p) => {
      const link = document.createElement("a");
      link.className = "sign-in-provider";
      link.href = p.url;
      link.dataset.provider = p.id;
      link.textContent = `Sign in with ${p.title}`;
      return link;
    }),
  );
  box.hidden = providers.length === 0;
}

/** Why a redirect sign-in was refused (the gateway sends the browser back with ?sign-in-error=), once. */
function redirectError() {
  const url = new URL(window.location.href);
  const error = url.searchParams.get("sign-in-error");
  if (error === null) return "";
  url.searchParams.delete("sign-in-error");
  window.history.replaceState(null, "", url.pathname + url.search + url.hash);
  return error;
}

/** Ask for a user name and password; resolves to the gateway's answer ({user, must_change_password, ...}). */
function askCredentials(notice, username = "") {
  const dialog = document.getElementById("sign-in");
  const form = dialog.querySelector("form");
  const message = dialog.querySelector(".sign-in-message");
  const button = form.querySelector("button[type=submit]");
  setText(dialog.querySelector(".sign-in-notice"), notice);
  message.textContent = redirectError();
  showProviders(dialog);
  if (username) form.elements.username.value = username;
  return new Promise((resolve) => {
    let pending = true;
    if (!dialog.dataset.wired) {
      dialog.dataset.wired = "1";
      keepOpen(dialog, () => dialog.dataset.pending === "1");
    }
    dialog.dataset.pending = "1";
    form.onsubmit = async (event) => {
      event.preventDefault();
      if (!pending) return;
      const data = new FormData(form);
      message.textContent = "Signing in…";
      button.disabled = true;
      try {
        const body = await signIn(String(data.get("username")).trim(), String(data.get("password")));
        pending = false;
        dialog.dataset.pending = "";
        form.reset();
        dialog.close();
        resolve({ ...body, password: String(data.get("password")) });
      } catch (err) {
        message.textContent = err.status === 0 ? "The gateway cannot be reached; try again in a moment." : err.message;
        form.querySelector("input[name=password]").select();
      } finally {
        button.disabled = false;
      }
    };
    if (!dialog.open) dialog.showModal();
    (form.elements.username.value ? form.elements.password : form.elements.username).focus();
  });
}

/**
 * The password change form. `forced`: the account holds a one-time password, so the only
 * way out is changing it or signing out. Resolves to true when the password was changed.
 */
export function changePasswordForm({ username = "", currentPassword = "", forced = false } = {}) {
  const dialog = document.getElementById("change-password");
  const form = dialog.querySelector("form");
  const message = dialog.querySelector(".sign-in-message");
  const submit = form.querySelector("button[type=submit]");
  const other = form.querySelector("[data-action=cancel]");
  form.reset();
  form.elements.username.value = username;
  form.elements.old_password.value = currentPassword;
  dialog.querySelectorAll("[data-forced]").forEach((node) => (node.hidden = !forced));
  other.textContent = forced ? "Sign out" : "Cancel";
  message.textContent = "";
  return new Promise((resolve) => {
    if (!dialog.dataset.wired) {
      dialog.dataset.wired = "1";
      keepOpen(dialog, () => dialog.dataset.forced === "1");
    }
    dialog.dataset.forced = forced ? "1" : "";
    const finish = (changed) => {
      dialog.dataset.forced = "";
      form.reset();
      dialog.close();
      resolve(changed);
    };
    // Escape on the voluntary form is a cancel.
    dialog.onclose = () => {
      if (!forced && dialog.dataset.done !== "1") resolve(false);
    };
    dialog.dataset.done = "";
    other.onclick = () => {
      dialog.dataset.done = "1";
      finish(false);
    };
    form.onsubmit = async (event) => {
      event.preventDefault();
      const data = new FormData(form);
      const next = String(data.get("new_password"));
      if (next !== String(data.get("repeat_password"))) {
        message.textContent = "The new passwords do not match.";
        form.elements.repeat_password.select();
        return;
      }
      message.textContent = "Changing the password…";
      submit.disabled = true;
      try {
        await changePassword(String(data.get("old_password")), next);
        dialog.dataset.done = "1";
        finish(true);
      } catch (err) {
        // 400 names the rule the new password breaks; 403 says the current one is wrong.
        message.textContent = err.status === 0 ? "The gateway cannot be reached; try again in a moment." : err.message;
        (err.status === 403 ? form.elements.old_password : form.elements.new_password).select();
      } finally {
        submit.disabled = false;
      }
    };
    if (!dialog.open) dialog.showModal();
    (currentPassword ? form.elements.new_password : form.elements.old_password).focus();
  });
}

/**
 * Sign in, and change a one-time password first when the account has one; resolves to the
 * user. `notice` is shown above the form ("Your session ended; sign in again.").
 * `pending` is the session the page already holds when it still needs its password changed;
 * `username` fills in the user name (the one whose session just ended).
 */
export async function authenticate({ notice = "", pending = null, username = "" } = {}) {
  let body = pending;
  for (;;) {
    if (!body) body = await askCredentials(notice, username);
    if (!body.must_change_password) return body.user;
    const changed = await changePasswordForm({
      username: body.user.username,
      currentPassword: body.password || "",
      forced: true,
    });
    if (changed) return { ...body.user };
    await signOut();
    body = null;
    notice = "";
    username = "";
  }
}
