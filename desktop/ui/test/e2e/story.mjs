// The Desktop extension's e2e story, by clicking only, in headless Chromium (Debian's package driven
// by playwright-core; no browser download). The bridge (e2e/desktop_test.go) serves the built UI
// unchanged and stands in for Docker Desktop: window.ddClient's exec calls reach it, and it runs
// the real teledock binary (and docker logs/rm) against the built-in cluster.
//
// Env: BRIDGE (http://127.0.0.1:PORT), CHROMIUM, SHOTS (folder), NAMESPACE, WORKLOAD, HANDLER_IMAGE.
// Prints "STEP name" lines as it goes; exits non-zero with the reason on failure.
import { chromium } from "playwright-core";
import { mkdir } from "node:fs/promises";

const { BRIDGE, CHROMIUM, SHOTS, NAMESPACE, WORKLOAD, HANDLER_IMAGE } = process.env;
await mkdir(SHOTS, { recursive: true });

// What Docker Desktop injects, as the bridge provides it. A non-zero exit rejects with the result,
// as Desktop does; a stream delivers stdout chunks until closed.
function ddClientShim(bridge) {
  async function exec(kind, cmd, args) {
    const r = await fetch(`${bridge}/exec`, { method: "POST", body: JSON.stringify({ kind, cmd, args }) });
    const res = await r.json();
    if (res.code !== 0) throw res;
    return res;
  }
  function stream(cmd, args, { onOutput, onError, onClose }) {
    const ctl = new AbortController();
    (async () => {
      try {
        const r = await fetch(`${bridge}/stream`, { method: "POST", body: JSON.stringify({ kind: "host", cmd, args }), signal: ctl.signal });
        const reader = r.body.getReader();
        const dec = new TextDecoder();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          onOutput({ stdout: dec.decode(value, { stream: true }) });
        }
        onClose(0);
      } catch (e) {
        if (!ctl.signal.aborted) onError(e);
      }
    })();
    return { close: () => ctl.abort() };
  }
  // Desktop also injects its MUI theme options; plain light/dark modes stand in for them.
  window.__ddMuiV6Themes = { light: { palette: { mode: "light" } }, dark: { palette: { mode: "dark" } } };
  window.ddClient = {
    extension: { host: { cli: { exec: (cmd, args, opts) => (opts && opts.stream ? stream(cmd, args, opts.stream) : exec("host", cmd, args)) } } },
    docker: { cli: { exec: (cmd, args) => exec("docker", cmd, args) } },
  };
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
let step = "start";
const page = await browser.newPage({ viewport: { width: 1200, height: 800 } });
page.on("pageerror", (e) => console.log(`page error: ${e.message}`));
page.on("console", (m) => console.log(`console: ${m.text()}`));
try {
  await page.addInitScript(ddClientShim, BRIDGE);
  const shot = (name) => page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });
  const go = (name) => { step = name; console.log(`STEP ${name}`); };

  go("open");
  await page.goto(`${BRIDGE}/ui/index.html`);
  await page.getByRole("tab", { name: "Connection" }).waitFor();

  go("connect");
  await page.getByLabel("Namespace").click();
  await page.getByRole("option", { name: NAMESPACE, exact: true }).click();
  await page.getByRole("button", { name: "Connect" }).click();
  await page.getByLabel("API server ok").waitFor({ timeout: 120_000 });
  await page.getByLabel("traffic-manager ok").waitFor({ timeout: 60_000 });
  await page.getByLabel("DNS ok").waitFor({ timeout: 60_000 });
  await shot("1-connection");

  go("workloads");
  await page.getByRole("tab", { name: "Workloads" }).click();
  await page.getByRole("button", { name: `Intercept ${WORKLOAD}` }).waitFor({ timeout: 60_000 });
  await shot("2-workloads");

  go("intercept");
  await page.getByRole("button", { name: `Intercept ${WORKLOAD}` }).click();
  await page.getByLabel("Handler image").fill(HANDLER_IMAGE);
  await shot("3-intercept-dialog");
  await page.getByRole("button", { name: "Start intercept" }).click();
  await page.getByRole("dialog").waitFor({ state: "detached", timeout: 180_000 });
  console.log("INTERCEPTED");

  go("intercepts");
  await page.getByRole("tab", { name: "Intercepts" }).click();
  await page.getByRole("button", { name: `Leave ${WORKLOAD}` }).waitFor({ timeout: 30_000 });
  // The Go side checks that the cluster's request reaches the handler; it answers on stdin.
  await new Promise((resolve) => process.stdin.once("data", resolve));
  process.stdin.destroy(); // an open stdin would keep node running after the story

  go("env");
  await page.getByRole("button", { name: `Environment of ${WORKLOAD}` }).click();
  const value = page.getByLabel("value of ECHO_TEXT");
  await value.waitFor();
  if (!/^•+$/.test(await value.innerText())) throw new Error("the env value is not masked");
  await shot("4-env-masked");
  await page.getByRole("button", { name: "Reveal ECHO_TEXT" }).click();
  const revealed = await value.innerText();
  console.log(`REVEALED ${revealed}`);
  await shot("5-env-revealed");

  go("leave");
  await page.getByRole("button", { name: `Leave ${WORKLOAD}` }).click();
  await page.getByText("No intercepts.").waitFor({ timeout: 60_000 });
  console.log("LEFT");

  go("logs");
  await page.getByRole("tab", { name: "Logs" }).click();
  await page.getByLabel("daemon log").waitFor();
  await shot("6-logs");

  go("quit");
  await page.getByRole("tab", { name: "Connection" }).click();
  await page.getByRole("button", { name: "Quit" }).click();
  await page.getByLabel("API server off").waitFor({ timeout: 60_000 });
  await shot("7-quit");
  console.log("DONE");
} catch (e) {
  console.log(`FAILED at ${step}: ${e.message}`);
  await page.screenshot({ path: `${SHOTS}/failed-${step}.png`, fullPage: true }).catch(() => {});
  process.exitCode = 1;
} finally {
  await browser.close();
}
