// The sign-in dialog, shown whenever the gateway answers 401. A full login page (password
// change, sign-out, station mode) can replace it: app.js only calls showSignIn().

import { signIn } from "./api.js";

/** Show the sign-in dialog (once); `onSignedIn` runs after a successful sign-in. */
export function showSignIn(onSignedIn) {
  const dialog = document.getElementById("sign-in");
  if (dialog.open) return;
  const form = dialog.querySelector("form");
  const message = dialog.querySelector(".sign-in-message");
  message.textContent = "";
  form.onsubmit = async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    message.textContent = "Signing in…";
    try {
      const body = await signIn(String(data.get("username")), String(data.get("password")));
      if (body.must_change_password) {
        message.textContent = "This account must change its password first; that is not possible from this page yet.";
        return;
      }
      form.reset();
      dialog.close();
      onSignedIn(body.user);
    } catch (err) {
      message.textContent = err.message;
    }
  };
  dialog.showModal();
  form.querySelector("input[name=username]").focus();
}
