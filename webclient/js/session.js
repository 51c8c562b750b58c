// The signed-in user: what their role lets them do, and the user menu in the top bar
// (who is signed in, "Change password", "Sign out").

/** The user's areas in words. */
export function areasText(user) {
  if (user.all_areas) return "All areas";
  return user.areas && user.areas.length ? user.areas.join(", ") : "No areas";
}

/** True when the user's role grants any of `actions`. */
export function can(user, ...actions) {
  const granted = new Set(user?.actions || []);
  return actions.some((action) => granted.has(action));
}

export class UserMenu extends EventTarget {
  #root;
  #panel;

  /** Events: 'change-password', 'sign-out'. */
  constructor(root) {
    super();
    this.#root = root;
    this.#panel = root.querySelector("[popover]");
    for (const action of ["change-password", "sign-out"]) {
      root.querySelector(`[data-action="${action}"]`).addEventListener("click", () => {
        this.close();
        this.dispatchEvent(new Event(action));
      });
    }
  }

  show(user) {
    const name = user.display_name || user.username;
    const root = this.#root;
    root.querySelector(".user-menu-name").textContent = name;
    root.querySelector(".user-menu-role").textContent = user.role_title || user.role;
    root.querySelector(".user-menu-full").textContent = name;
    root.querySelector('[data-field="username"]').textContent = user.username;
    root.querySelector('[data-field="role"]').textContent = user.role_title || user.role;
    root.querySelector('[data-field="areas"]').textContent = areasText(user);
    root.querySelector(".user-menu-button").setAttribute("aria-label", `${name}, ${user.role_title || user.role}: account menu`);
    root.hidden = false;
  }

  close() {
    if (this.#panel.matches(":popover-open")) this.#panel.hidePopover();
  }

  hide() {
    this.close();
    this.#root.hidden = true;
  }
}
