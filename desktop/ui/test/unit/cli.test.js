import { test } from "node:test";
import assert from "node:assert/strict";
import { CliError, parseDocument, parseResult, LineBuffer, health, interceptArgs, handlerArgs, commandLine, mask, dotenv } from "../../src/cli.js";

test("a document is parsed", () => {
  const doc = parseResult({ stdout: '{"schemaVersion":1,"workloads":[{"name":"echo"}]}', stderr: "", code: 0 });
  assert.equal(doc.workloads[0].name, "echo");
});

test("an error document becomes a CliError with code and hint", () => {
  const out = JSON.stringify({ schemaVersion: 1, error: { code: "NOT_CONNECTED", reason: "not connected", message: 'not connected (connection "default")', hint: "Run `teledock connect` first." } });
  // ddClient throws for a non-zero exit, with the same fields.
  assert.throws(() => parseResult({ stdout: out, stderr: "", code: 1 }), (e) => e instanceof CliError && e.code === "NOT_CONNECTED" && e.hint.includes("connect") && e.message.includes("not connected"));
});

test("stderr without JSON (a crash, a bad flag) is an error, never a stack", () => {
  assert.throws(() => parseResult({ stdout: "", stderr: "teledock: unknown flag: --bogus\n", code: 1 }), (e) => e.code === "ERROR" && e.message === "teledock: unknown flag: --bogus");
  assert.throws(() => parseResult({ stdout: "", stderr: "", code: 2 }), (e) => e.code === "ERROR" && /exited with 2/.test(e.message));
  assert.throws(() => parseResult({ stdout: "", stderr: "", code: 0 }), (e) => e.code === "BAD_OUTPUT");
});

test("output that is not a JSON object is refused", () => {
  assert.throws(() => parseDocument("Connected to context x"), (e) => e.code === "BAD_OUTPUT");
  assert.throws(() => parseDocument("[1,2]"), (e) => e.code === "BAD_OUTPUT");
  assert.throws(() => parseDocument('{"schemaVersion": 2}'), (e) => e.code === "SCHEMA_TOO_NEW");
});

test("a stream's partial lines wait for the rest", () => {
  const b = new LineBuffer();
  assert.deepEqual(b.push('{"a":1}\n{"b"'), ['{"a":1}']);
  assert.deepEqual(b.push(":2}\n\n"), ['{"b":2}']);
  assert.deepEqual(b.push(""), []);
});

test("health from a status document", () => {
  assert.deepEqual(health({ daemon: { running: false } }), { running: false, apiServer: "off", trafficManager: "off", dns: "off", detail: "" });
  const h = health({ daemon: { running: true, status: "connected", network_ready: true }, traffic_manager: { connected: true } });
  assert.equal(h.apiServer + h.trafficManager + h.dns, "okokok");
  assert.equal(health({ daemon: { running: true, status: "connecting", error: "no traffic-manager" } }).trafficManager, "error");
});

test("the intercept dialog's command", () => {
  const form = { workload: "echo", name: "", localPort: 8080, servicePort: "http", handler: "image", image: "my/img:1", env: true, mounts: true };
  assert.deepEqual(interceptArgs(form, "default"), ["intercept", "echo", "--port", "8080:http", "--name", "default"]);
  assert.deepEqual(handlerArgs(form, "default"), ["run", "--connection", "default", "--intercept", "echo", "-d", "--rm", "--name", "echo-handler", "-e", "PORT=8080", "my/img:1"]);
  assert.deepEqual(handlerArgs({ ...form, env: false }, "default").slice(3, 6), ["--intercept", "echo", "--no-pod-env"]);
  assert.ok(!handlerArgs({ ...form, env: false, mounts: false }, "default").includes("--intercept"));
  const other = { ...form, name: "mine", handler: "container", container: "web", mounts: false, servicePort: "" };
  assert.deepEqual(interceptArgs(other, "c2"), ["intercept", "mine", "--workload", "echo", "--port", "8080", "--address", "web", "--mount=false", "--name", "c2"]);
  assert.equal(commandLine(["intercept", "a b", "--port", "80"]), "teledock intercept 'a b' --port 80");
});

test("env: masked, and copied as .env", () => {
  assert.equal(mask("s3cr3t"), "••••••");
  assert.equal(dotenv({ B: "two words", A: "1", C: 'q"x' }), 'A=1\nB="two words"\nC="q\\"x"\n');
});
