// The teledock CLI as the UI sees it: every call is `teledock ARGS -o json` through the Docker
// Desktop extension API (ddClient.extension.host.cli.exec); answers and errors are JSON documents
// (docs/json.md). The parsing here is pure, so that it is unit-tested without Desktop.

export const SCHEMA_VERSION = 1;

// CliError is a failed command: code is the CLI's stable error code (NOT_CONNECTED, NO_MANAGER, ...)
// and hint what to do about it.
export class CliError extends Error {
  constructor({ code = "ERROR", reason = "", message = "", hint = "" }) {
    super(message || reason || code);
    this.name = "CliError";
    this.code = code;
    this.reason = reason;
    this.hint = hint;
  }
}

// parseDocument reads one JSON document the CLI printed; it throws a CliError for an error
// document, and for output that is not JSON at all (a crash, an old CLI).
export function parseDocument(text) {
  let doc;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new CliError({ code: "BAD_OUTPUT", message: `teledock printed something that is not JSON: ${String(text).slice(0, 200)}` });
  }
  if (doc === null || typeof doc !== "object" || Array.isArray(doc)) {
    throw new CliError({ code: "BAD_OUTPUT", message: "teledock printed JSON that is not an object" });
  }
  if (doc.error) {
    throw new CliError(doc.error);
  }
  if (typeof doc.schemaVersion === "number" && doc.schemaVersion > SCHEMA_VERSION) {
    // Newer fields are fine; a newer schema may have changed meanings: say so, do not guess.
    throw new CliError({ code: "SCHEMA_TOO_NEW", message: `teledock speaks schema ${doc.schemaVersion}; this extension knows ${SCHEMA_VERSION}`, hint: "Update the extension." });
  }
  return doc;
}

// parseResult turns an exec result (or the error ddClient throws for a non-zero exit, which
// carries the same stdout/stderr/code) into the document, or throws a CliError.
export function parseResult(res) {
  const stdout = (res && res.stdout) || "";
  const stderr = (res && res.stderr) || "";
  if (stdout.trim() !== "") {
    return parseDocument(stdout);
  }
  const code = res && typeof res.code === "number" ? res.code : 0;
  if (code !== 0 || stderr.trim() !== "") {
    throw new CliError({ code: "ERROR", message: stderr.trim() || `teledock exited with ${code}` });
  }
  throw new CliError({ code: "BAD_OUTPUT", message: "teledock printed nothing" });
}

// LineBuffer splits a stream's chunks into whole lines; a partial line waits for the rest.
export class LineBuffer {
  constructor() {
    this.rest = "";
  }
  push(chunk) {
    const text = this.rest + chunk;
    const lines = text.split("\n");
    this.rest = lines.pop();
    return lines.filter((l) => l.trim() !== "");
  }
}

// health turns a status document into the three lights the connection view shows.
export function health(status) {
  const d = (status && status.daemon) || {};
  const tm = status && status.traffic_manager;
  return {
    running: !!d.running,
    apiServer: d.running ? (d.status === "connected" ? "ok" : d.error ? "error" : "pending") : "off",
    trafficManager: tm && tm.connected ? "ok" : d.running ? (d.error ? "error" : "pending") : "off",
    dns: d.network_ready ? "ok" : d.network_error ? "error" : d.running ? "pending" : "off",
    detail: d.error || d.network_error || "",
  };
}

// interceptArgs builds `teledock intercept` from the dialog's form; its text is the equivalent
// command the dialog shows.
export function interceptArgs(form, connection) {
  const args = ["intercept", form.name || form.workload];
  if (form.name && form.name !== form.workload) {
    args.push("--workload", form.workload);
  }
  if (form.localPort) {
    args.push("--port", form.servicePort ? `${form.localPort}:${form.servicePort}` : String(form.localPort));
  }
  if (form.handler === "container" && form.container) {
    args.push("--address", form.container);
  }
  if (!form.mounts) {
    args.push("--mount=false");
  }
  args.push("--name", connection);
  return args;
}

// handlerArgs is the `teledock run` that starts an image as the intercept's handler, in the
// connection's network, with the pod's environment (env on) and volumes (mounts on).
export function handlerArgs(form, connection) {
  const args = ["run", "--connection", connection];
  if (form.env || form.mounts) {
    args.push("--intercept", form.name || form.workload);
    if (!form.env) {
      args.push("--no-pod-env");
    }
  }
  args.push("-d", "--rm", "--name", handlerName(form));
  if (form.localPort) {
    args.push("-e", `PORT=${form.localPort}`);
  }
  args.push(form.image);
  return args;
}

export function handlerName(form) {
  return `${form.name || form.workload}-handler`;
}

// shellQuote quotes an argument for the equivalent command line.
export function shellQuote(a) {
  return /^[A-Za-z0-9_./:=@%+,-]+$/.test(a) ? a : `'${String(a).replace(/'/g, `'\\''`)}'`;
}

export function commandLine(args) {
  return ["teledock", ...args].map(shellQuote).join(" ");
}

// mask hides a value: its length shows, its characters do not.
export function mask(value) {
  return "•".repeat(Math.min(String(value).length, 16) || 1);
}

// dotenv renders an environment as a .env file (docker --env-file style, values quoted only where
// needed), sorted by name.
export function dotenv(env) {
  return Object.keys(env || {})
    .sort()
    .map((k) => {
      const v = String(env[k]);
      return /[\s"'#\\$]/.test(v) ? `${k}="${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"` : `${k}=${v}`;
    })
    .join("\n") + "\n";
}
