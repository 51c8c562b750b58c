// The API page (#/api): the gateway's OpenAPI 3.1 document (GET /api/openapi.json), generated
// from its routes, shown for integrators — every operation grouped by tag, with the action it
// needs, its parameters, its request body and its answers, and the schemas they name. A filter
// narrows by path, summary or action. Rendered here from the JSON (no documentation bundle).

import { request } from "./api.js";

const METHODS = ["get", "post", "put", "patch", "delete", "options", "head"];

function el(tag, className, text = "", attrs = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== "") node.textContent = text;
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

/** A short, readable form of a JSON schema: a type name, "[T]", "A | B", or a $ref's name. */
export function typeOf(schema) {
  if (!schema) return "any";
  if (schema.$ref) return schema.$ref.split("/").pop();
  if (schema.anyOf) return schema.anyOf.map(typeOf).join(" | ");
  if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(" | ");
  if (schema.type === "array") return `[${typeOf(schema.items)}]`;
  if (Array.isArray(schema.type)) return schema.type.join(" | ");
  return schema.type || "object";
}

function constraints(schema) {
  if (!schema) return "";
  const out = [];
  for (const [key, label] of [
    ["minimum", "≥"], ["maximum", "≤"], ["exclusiveMinimum", ">"], ["exclusiveMaximum", "<"],
    ["minLength", "length ≥"], ["maxLength", "length ≤"], ["maxItems", "items ≤"], ["pattern", "matches"],
  ]) {
    if (schema[key] !== undefined) out.push(`${label} ${schema[key]}`);
  }
  return out.join(", ");
}

export class ApiDocsPage {
  constructor(root) {
    this.root = root;
    this.doc = null;
    this.query = "";
  }

  async show() {
    this.root.hidden = false;
    if (!this.doc) {
      this.root.replaceChildren(el("p", "apidocs-status", "Loading the API description…"));
      try {
        this.doc = await (await request("/api/openapi.json")).json();
      } catch (error) {
        this.root.replaceChildren(el("p", "apidocs-status error", `The API description could not be read: ${error.message}`));
        return;
      }
    }
    this.render();
  }

  hide() {
    this.root.hidden = true;
  }

  operations() {
    const ops = [];
    for (const [path, item] of Object.entries(this.doc.paths)) {
      for (const method of METHODS) {
        if (item[method]) ops.push({ path, method, op: item[method] });
      }
    }
    return ops;
  }

  render() {
    const doc = this.doc;
    const header = el("header", "apidocs-header");
    header.append(
      el("h2", "", `${doc.info.title} ${doc.info.version}`, { id: "apidocs-heading" }),
      el("p", "apidocs-description", doc.info.description || ""),
    );
    const download = el("a", "apidocs-download", "openapi.json", { href: "/api/openapi.json", download: "citygate-openapi.json" });
    const filter = el("input", "apidocs-filter", "", { type: "search", placeholder: "Filter: path, summary or action", "aria-label": "Filter operations" });
    filter.value = this.query;
    filter.addEventListener("input", () => {
      this.query = filter.value;
      this.renderList(list);
    });
    header.append(el("p", "", "", {}), filter, download);
    const list = el("div", "apidocs-list");
    this.renderList(list);
    const schemas = this.renderSchemas();
    this.root.replaceChildren(header, list, schemas);
  }

  renderList(list) {
    const q = this.query.trim().toLowerCase();
    const groups = new Map();
    for (const entry of this.operations()) {
      const access = entry.op["x-citygate-access"] || {};
      const hay = `${entry.method} ${entry.path} ${entry.op.summary || ""} ${access.action || ""}`.toLowerCase();
      if (q && !hay.includes(q)) continue;
      const tag = (entry.op.tags && entry.op.tags[0]) || "other";
      if (!groups.has(tag)) groups.set(tag, []);
      groups.get(tag).push(entry);
    }
    const sections = [];
    for (const tag of [...groups.keys()].sort()) {
      const section = el("section", "apidocs-tag");
      section.append(el("h3", "", tag));
      for (const entry of groups.get(tag)) section.append(this.renderOperation(entry));
      sections.push(section);
    }
    if (!sections.length) sections.push(el("p", "apidocs-status", "No operation matches."));
    list.replaceChildren(...sections);
  }

  renderOperation({ path, method, op }) {
    const details = el("details", "apidocs-op");
    details.dataset.operation = `${method.toUpperCase()} ${path}`;
    const summary = el("summary");
    const access = op["x-citygate-access"] || {};
    const needs = access.public ? "public" : access.action ? `${access.action}${access.camera ? " on the camera" : ""}` : "signed in";
    summary.append(
      el("span", `apidocs-method apidocs-${method}`, method.toUpperCase()),
      el("code", "apidocs-path", path),
      el("span", "apidocs-summary", op.summary || ""),
      el("span", "apidocs-access", needs),
    );
    details.append(summary);
    details.addEventListener("toggle", () => {
      if (details.open && details.childElementCount === 1) details.append(this.renderBody(op));
    });
    return details;
  }

  renderBody(op) {
    const body = el("div", "apidocs-body");
    if (op.parameters && op.parameters.length) {
      const table = el("table", "apidocs-params");
      table.append(el("caption", "", "Parameters"));
      const head = el("tr");
      for (const h of ["name", "in", "type", "required", "constraints"]) head.append(el("th", "", h));
      table.append(head);
      for (const p of op.parameters) {
        const row = el("tr");
        row.append(
          el("td", "", p.name), el("td", "", p.in), el("td", "", typeOf(p.schema)),
          el("td", "", p.required ? "yes" : "no"), el("td", "", constraints(p.schema)),
        );
        table.append(row);
      }
      body.append(table);
    }
    if (op.requestBody) {
      body.append(el("h4", "", "Request body"));
      for (const [type, media] of Object.entries(op.requestBody.content || {})) {
        body.append(el("p", "", `${type}: ${typeOf(media.schema)}`));
      }
    }
    body.append(el("h4", "", "Answers"));
    const answers = el("ul", "apidocs-answers");
    for (const [status, answer] of Object.entries(op.responses || {})) {
      const types = Object.entries(answer.content || {}).map(([type, media]) => `${type}: ${typeOf(media.schema)}`);
      answers.append(el("li", "", `${status} — ${answer.description || ""}${types.length ? ` (${types.join("; ")})` : ""}`));
    }
    body.append(answers);
    return body;
  }

  renderSchemas() {
    const section = el("section", "apidocs-schemas");
    section.append(el("h3", "", "Schemas"));
    const schemas = (this.doc.components && this.doc.components.schemas) || {};
    for (const name of Object.keys(schemas).sort()) {
      const schema = schemas[name];
      const details = el("details", "apidocs-schema", "", { id: `schema-${name}` });
      details.append(el("summary", "", name));
      const props = schema.properties || {};
      const required = new Set(schema.required || []);
      if (Object.keys(props).length) {
        const table = el("table", "apidocs-params");
        for (const [prop, sub] of Object.entries(props)) {
          const row = el("tr");
          row.append(
            el("td", "", prop), el("td", "", typeOf(sub)), el("td", "", required.has(prop) ? "required" : ""),
            el("td", "", constraints(sub)),
          );
          table.append(row);
        }
        details.append(table);
      } else {
        details.append(el("p", "", typeOf(schema)));
      }
      section.append(details);
    }
    return section;
  }
}
