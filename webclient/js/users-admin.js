// The Users page (action users.manage): every account with its state, a form to create
// one, and per account: edit (name, role, areas), disable/enable, reset password, unlock.
// A generated one-time password is shown once, with a copy button.
//
// The gateway has no list of roles over HTTP: the role field suggests the roles the
// current accounts hold, and a mistyped role is refused with the gateway's own message
// (which names the known roles).
//
// Two-person rule: giving an account export.approve, export.produce or users.manage
// (creating it, changing its role or widening its areas, resetting its password) waits as a
// pending change (the gateway answers 202). "Waiting for a second administrator" lists them;
// another administrator confirms (and receives the one-time password) or rejects; the
// requester may withdraw.

import { createUser, listUsers, request, resetPassword, updateUser } from "./api.js";
import { areasText } from "./session.js";

const CONFIRM_MS = 4000;

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : "never";
}

/** The account's states, most important first: disabled, locked, must change password, else active. */
export function userStates(user) {
  const states = [];
  if (user.disabled) states.push({ key: "disabled", text: "disabled" });
  if (user.locked_until) {
    const until = new Date(user.locked_until * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    states.push({ key: "locked", text: `locked until ${until}` });
  }
  if (user.must_change_password) states.push({ key: "must-change", text: "must change password" });
  if (!states.length) states.push({ key: "active", text: "active" });
  return states;
}

/** "a, b , c" → ["a", "b", "c"] */
function areaList(text) {
  return String(text)
    .split(",")
    .map((a) => a.trim())
    .filter(Boolean);
}

function areasField(name, value = "") {
  return el("input", { name, value, placeholder: "north, harbour", autocomplete: "off", spellcheck: "false" });
}

function roleField(name, value = "") {
  return el("input", { name, value, list: "role-options", required: "", autocomplete: "off", spellcheck: "false" });
}

export class UsersPage {
  #root;
  #me;
  #users = [];
  #table;
  #message;
  #secret;
  #roles;
  #editor;
  #pending;
  #shown = false;

  /** `me`: the signed-in administrator's username (they cannot disable or re-role themselves). */
  constructor(root, { me }) {
    this.#root = root;
    this.#me = me;
    this.#build();
  }

  show() {
    this.#root.hidden = false;
    this.#shown = true;
    this.refresh();
  }

  hide() {
    this.#root.hidden = true;
    this.#shown = false;
    this.#hideSecret();
  }

  /** Remove everything this page put in the document (sign-out). */
  destroy() {
    this.hide();
    this.#root.replaceChildren();
  }

  #build() {
    this.#roles = el("datalist", { id: "role-options" });
    this.#message = el("p", { class: "page-message", role: "alert" });
    this.#secret = this.#buildSecret();
    this.#editor = this.#buildEditor();
    this.#pending = el("section", { class: "panel pending-changes", id: "pending-changes", "aria-label": "Pending changes", hidden: true });
    this.#table = el("tbody");
    const table = el(
      "table",
      { class: "data-table users-table" },
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          ...["User name", "Name", "Role", "Areas", "State", "Last sign-in", ""].map((h) => el("th", { scope: "col" }, h)),
        ),
      ),
      this.#table,
    );
    this.#root.replaceChildren(
      el("div", { class: "page-head" }, el("h2", { id: "users-heading" }, "Users"), el("span", { class: "page-count" })),
      this.#buildCreateForm(),
      this.#secret,
      this.#message,
      this.#pending,
      el("div", { class: "table-wrap" }, table),
      this.#roles,
      this.#editor,
    );
  }

  #buildCreateForm() {
    const form = el(
      "form",
      { class: "panel form-row", id: "user-create", "aria-label": "New user" },
      el("h3", {}, "New user"),
      el("label", {}, "User name", el("input", { name: "username", required: "", autocomplete: "off", spellcheck: "false", autocapitalize: "none", pattern: "[a-z0-9._\\-]{2,64}", title: "2–64 characters: a–z, 0–9, '.', '_' or '-'" })),
      el("label", {}, "Name", el("input", { name: "display_name", autocomplete: "off" })),
      el("label", {}, "Role", roleField("role")),
      el("label", {}, "Areas", areasField("areas")),
      el("label", { class: "check" }, el("input", { type: "checkbox", name: "all_areas" }), "All areas"),
      el("button", { type: "submit", class: "primary" }, "Create user"),
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const data = new FormData(form);
      const username = String(data.get("username")).trim();
      const done = await this.#run(() =>
        createUser({
          username,
          display_name: String(data.get("display_name")).trim(),
          role: String(data.get("role")).trim(),
          areas: areaList(data.get("areas")),
          all_areas: data.get("all_areas") === "on",
        }),
      );
      if (!done) return;
      form.reset();
      if (done.pending) this.#say(`${username}: ${done.message}`);
      else this.#showSecret(username, done.password, "created");
    });
    return form;
  }

  #buildSecret() {
    const value = el("input", { class: "secret-value", readOnly: true, "aria-label": "One-time password", spellcheck: "false" });
    const copy = el("button", { type: "button" }, "Copy");
    const status = el("span", { class: "secret-copied", role: "status" });
    copy.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(value.value);
      } catch {
        value.select();
        document.execCommand("copy"); // no clipboard API (plain http from another host)
      }
      status.textContent = "Copied";
    });
    const dismiss = el("button", { type: "button", class: "secondary" }, "Done");
    dismiss.addEventListener("click", () => this.#hideSecret());
    return el(
      "div",
      { class: "panel secret", id: "one-time-password", hidden: true },
      el("p", { class: "secret-title" }),
      el("div", { class: "secret-row" }, value, copy, status, dismiss),
      el(
        "p",
        { class: "secret-note" },
        "Shown only this once. Give it to the person directly; they choose their own password when they first sign in.",
      ),
    );
  }

  #showSecret(username, password, what) {
    const title = this.#secret.querySelector(".secret-title");
    title.replaceChildren(`One-time password for `, el("strong", {}, username), what === "reset" ? " (password reset)" : "");
    this.#secret.querySelector(".secret-value").value = password;
    this.#secret.querySelector(".secret-copied").textContent = "";
    this.#secret.hidden = false;
    this.#secret.querySelector(".secret-value").select();
  }

  #hideSecret() {
    this.#secret.hidden = true;
    this.#secret.querySelector(".secret-value").value = "";
  }

  #buildEditor() {
    const form = el(
      "form",
      { method: "dialog" },
      el("h2", { class: "editor-title" }),
      el("label", {}, "Name", el("input", { name: "display_name", autocomplete: "off" })),
      el("label", {}, "Role", roleField("role")),
      el("label", {}, "Areas (comma separated)", areasField("areas")),
      el("label", { class: "check" }, el("input", { type: "checkbox", name: "all_areas" }), "All areas"),
      el("p", { class: "sign-in-message", role: "alert" }),
      el(
        "div",
        { class: "sign-in-actions" },
        el("button", { type: "submit", class: "primary" }, "Save"),
        el("button", { type: "button", class: "secondary", dataset: { action: "cancel" } }, "Cancel"),
      ),
    );
    const dialog = el("dialog", { class: "sign-in user-editor", id: "user-editor", "aria-label": "Edit user" }, form);
    form.querySelector("[data-action=cancel]").addEventListener("click", () => dialog.close());
    return dialog;
  }

  #edit(user) {
    const dialog = this.#editor;
    const form = dialog.querySelector("form");
    const message = form.querySelector(".sign-in-message");
    dialog.querySelector(".editor-title").textContent = `Edit ${user.username}`;
    form.elements.display_name.value = user.display_name;
    form.elements.role.value = user.role;
    form.elements.role.disabled = user.username === this.#me;
    form.elements.role.title = user.username === this.#me ? "Another administrator must change your role" : "";
    form.elements.areas.value = user.areas.join(", ");
    form.elements.all_areas.checked = user.all_areas;
    message.textContent = "";
    form.onsubmit = async (event) => {
      event.preventDefault();
      const changes = {};
      const name = form.elements.display_name.value.trim();
      const role = form.elements.role.value.trim();
      const areas = areaList(form.elements.areas.value);
      const allAreas = form.elements.all_areas.checked;
      if (name !== user.display_name) changes.display_name = name;
      if (!form.elements.role.disabled && role !== user.role) changes.role = role;
      if (areas.join(",") !== [...user.areas].sort().join(",") || allAreas !== user.all_areas) {
        changes.areas = areas;
        changes.all_areas = allAreas;
      }
      if (!Object.keys(changes).length) {
        dialog.close();
        return;
      }
      let done;
      try {
        done = await updateUser(user.username, changes);
      } catch (err) {
        message.textContent = err.message;
        return;
      }
      dialog.close();
      this.#say(done.pending ? `${user.username}: ${done.message}` : "");
      this.refresh();
    };
    dialog.showModal();
    form.elements.display_name.focus();
  }

  /** Run an API call; on failure say why on the page and resolve to null. */
  async #run(call) {
    this.#say("");
    try {
      const result = await call();
      await this.refresh();
      return result;
    } catch (err) {
      if (err.status !== 401) this.#say(err.message);
      return null;
    }
  }

  #say(text) {
    this.#message.textContent = text;
    this.#message.hidden = !text;
  }

  async refresh() {
    let changes;
    try {
      [this.#users, changes] = await Promise.all([listUsers(), (await request("/api/users/pending")).json()]);
    } catch (err) {
      if (err.status !== 401) this.#say(`Cannot load the accounts: ${err.message}`);
      return;
    }
    if (!this.#shown) return;
    this.#render();
    this.#renderPending(changes);
  }

  /** Changes waiting for a second administrator: confirm (not one's own), reject or withdraw. */
  #renderPending(changes) {
    this.#pending.hidden = !changes.length;
    const rows = changes.map((change) => {
      const mine = change.requested_by === this.#me;
      const what = Object.entries(change.changes)
        .filter(([, v]) => v !== "" && !(Array.isArray(v) && !v.length))
        .map(([k, v]) => `${k.replace("_", " ")}: ${Array.isArray(v) ? v.join(", ") : v}`)
        .join("; ");
      const confirm = el("button", { type: "button", class: "primary", dataset: { action: "confirm-change" } }, "Confirm");
      if (mine) {
        confirm.disabled = true;
        confirm.title = "You asked for this change: another administrator must confirm it";
      }
      confirm.addEventListener("click", async () => {
        const done = await this.#run(async () => (await request(`/api/users/pending/${change.id}/confirm`, { method: "POST" })).json());
        if (done?.password) this.#showSecret(change.username, done.password, change.kind === "reset-password" ? "reset" : "created");
      });
      const cancel = el("button", { type: "button", class: "secondary", dataset: { action: "cancel-change" } }, mine ? "Withdraw" : "Reject");
      cancel.addEventListener("click", () => this.#run(() => request(`/api/users/pending/${change.id}/cancel`, { method: "POST" })));
      return el(
        "tr",
        { dataset: { change: String(change.id), pendingFor: change.username } },
        el("td", { class: "mono" }, change.username),
        el("td", {}, change.kind),
        el("td", {}, what || "—"),
        el("td", { class: "mono" }, change.requested_by),
        el("td", {}, when(change.expires_at)),
        el("td", { class: "row-actions" }, confirm, cancel),
      );
    });
    this.#pending.replaceChildren(
      el("h3", {}, "Waiting for a second administrator"),
      el(
        "table",
        { class: "data-table" },
        el("thead", {}, el("tr", {}, ...["User name", "Change", "Details", "Asked for by", "Expires", ""].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, ...rows),
      ),
    );
  }

  #render() {
    const users = this.#users;
    this.#root.querySelector(".page-count").textContent = `${users.length} account${users.length === 1 ? "" : "s"}`;
    const roles = new Map(users.map((u) => [u.role, u.role_title]));
    this.#roles.replaceChildren(
      ...[...roles].sort().map(([role, title]) => el("option", { value: role, label: title && title !== role ? title : role })),
    );
    this.#table.replaceChildren(...users.map((u) => this.#row(u)));
  }

  #row(user) {
    const self = user.username === this.#me;
    const actions = el("td", { class: "row-actions" });
    const edit = el("button", { type: "button", dataset: { action: "edit" } }, "Edit");
    edit.addEventListener("click", () => this.#edit(user));
    const toggle = el("button", { type: "button", dataset: { action: user.disabled ? "enable" : "disable" } }, user.disabled ? "Enable" : "Disable");
    if (self) {
      toggle.disabled = true;
      toggle.title = "You cannot disable your own account";
    }
    toggle.addEventListener("click", () => this.#run(() => updateUser(user.username, { disabled: !user.disabled })));
    const reset = el("button", { type: "button", dataset: { action: "reset-password" } }, "Reset password");
    reset.addEventListener("click", () => this.#confirmThen(reset, "Click to confirm", async () => {
      const done = await this.#run(() => resetPassword(user.username));
      if (done?.pending) this.#say(`${user.username}: ${done.message}`);
      else if (done) this.#showSecret(user.username, done.password, "reset");
    }));
    actions.append(edit, toggle, reset);
    if (user.locked_until) {
      const unlock = el("button", { type: "button", dataset: { action: "unlock" } }, "Unlock");
      unlock.addEventListener("click", () => this.#run(() => updateUser(user.username, { locked: false })));
      actions.append(unlock);
    }
    const states = userStates(user);
    return el(
      "tr",
      { dataset: { username: user.username, state: states[0].key } },
      el("td", { class: "mono" }, user.username, self ? el("span", { class: "you" }, " (you)") : null),
      el("td", {}, user.display_name),
      el("td", { title: user.role }, user.role_title || user.role),
      el("td", {}, areasText(user)),
      el("td", {}, ...states.map((s) => el("span", { class: "state-badge", dataset: { state: s.key } }, s.text))),
      el("td", {}, when(user.last_login_at)),
      actions,
    );
  }

  /** First click arms the button (its label asks for confirmation); a second click within a few seconds acts. */
  #confirmThen(button, label, action) {
    if (button.dataset.armed === "1") {
      button.dataset.armed = "";
      action();
      return;
    }
    const original = button.textContent;
    button.dataset.armed = "1";
    button.textContent = label;
    setTimeout(() => {
      button.dataset.armed = "";
      button.textContent = original;
    }, CONFIRM_MS);
  }
}
