// Builds the UI into build/ui: index.html and one bundle. `make extension` and the e2e tests run it.
import { build } from "esbuild";
import { mkdir, copyFile } from "node:fs/promises";

await mkdir("build/ui", { recursive: true });
await build({
  entryPoints: ["src/main.jsx"],
  bundle: true,
  minify: true,
  sourcemap: false,
  format: "iife",
  target: ["chrome110"],
  jsx: "automatic",
  loader: { ".js": "jsx" },
  define: { "process.env.NODE_ENV": '"production"' },
  outfile: "build/ui/app.js",
  logLevel: "warning",
});
await copyFile("index.html", "build/ui/index.html");
