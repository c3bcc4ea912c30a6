// teledock through Docker Desktop: the host binary for everything, the Docker CLI for the daemon's
// logs and the handler containers. Nothing else is called, and nothing is sent anywhere else.
import { CliError, LineBuffer, parseDocument, parseResult } from "./cli.js";

export const CONNECTION = "default";

export function makeTeledock(dd) {
  const host = dd.extension.host.cli;
  async function run(args) {
    let res;
    try {
      res = await host.exec("teledock", [...args, "-o", "json"]);
    } catch (e) {
      res = e; // a non-zero exit: the same stdout/stderr/code
    }
    return parseResult(res);
  }
  return {
    run,
    contexts: () => run(["contexts"]),
    namespaces: (context) => run(["namespaces", ...(context ? ["--context", context] : [])]),
    connect: (context, namespace) =>
      run(["connect", "--name", CONNECTION, ...(context ? ["--context", context] : []), ...(namespace ? ["-n", namespace] : [])]),
    install: (context) => run(["install", ...(context ? ["--context", context] : [])]),
    quit: () => run(["quit", "--name", CONNECTION]),
    list: () => run(["list", "--name", CONNECTION]),
    env: (name) => run(["env", name, "--name", CONNECTION]),
    leave: (name) => run(["leave", name, "--name", CONNECTION]),
    // startHandler runs `teledock run ... -d`: it prints the container ID, not JSON.
    startHandler: async (args) => {
      try {
        await host.exec("teledock", args);
      } catch (e) {
        throw new CliError({ message: (e.stderr || "").trim() || "the handler did not start" });
      }
    },
    removeContainer: (name) => dd.docker.cli.exec("rm", ["-f", name]).catch(() => {}),
    logs: async () => {
      const r = await dd.docker.cli.exec("logs", ["--tail", "300", `teledock-daemon-${CONNECTION}`]).catch((e) => e);
      return ((r && r.stdout) || "") + ((r && r.stderr) || "");
    },
    // watchStatus streams `status --watch -o json`; onStatus gets each document.
    watchStatus(onStatus, onError) {
      const lines = new LineBuffer();
      const proc = host.exec("teledock", ["status", "--watch", "--name", CONNECTION, "-o", "json"], {
        stream: {
          onOutput(data) {
            if (data.stdout) {
              for (const l of lines.push(data.stdout)) {
                try {
                  onStatus(parseDocument(l));
                } catch (e) {
                  onError(e);
                }
              }
            }
          },
          onError(e) {
            onError(e instanceof CliError ? e : new CliError({ message: String(e && e.message ? e.message : e) }));
          },
          onClose() {},
        },
      });
      return () => proc && proc.close && proc.close();
    },
  };
}
