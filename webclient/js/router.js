// Hash routing between the app's pages (#/live, #/users, #/audit).
//
// A page is {show(), hide()}; only the pages the user may open are given to the router,
// and any other address shows the home page. Nav links carry data-route="<name>".

export class Router {
  #pages;
  #home;
  #nav;
  #current = null;
  #onChange = () => this.#apply();

  constructor(pages, { home, nav }) {
    this.#pages = pages;
    this.#home = home;
    this.#nav = nav;
  }

  /** Show the links to `linked` pages, then the page the address names. */
  start(linked) {
    const shown = new Set(linked);
    this.#nav.querySelectorAll("[data-route]").forEach((a) => (a.hidden = !shown.has(a.dataset.route)));
    this.#nav.hidden = shown.size === 0;
    window.addEventListener("hashchange", this.#onChange);
    this.#apply();
  }

  stop() {
    window.removeEventListener("hashchange", this.#onChange);
    if (this.#current) this.#pages[this.#current].hide();
    this.#current = null;
    this.#nav.hidden = true;
    document.body.dataset.view = "none";
  }

  get current() {
    return this.#current;
  }

  #apply() {
    // "#/live?camera=d1": the page is "live"; the page reads its own parameters.
    let name = window.location.hash.replace(/^#\/?/, "").split("?")[0];
    if (!Object.hasOwn(this.#pages, name)) {
      name = this.#home;
      history.replaceState(null, "", `#/${name}`);
    }
    if (name === this.#current) return;
    if (this.#current) this.#pages[this.#current].hide();
    this.#current = name;
    document.body.dataset.view = name;
    this.#nav.querySelectorAll("[data-route]").forEach((a) => {
      if (a.dataset.route === name) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    });
    this.#pages[name].show();
  }
}
