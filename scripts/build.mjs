// Builds the package into dist/:
//  - type declarations: `tsc -p tsconfig.build.json` (declarations only, one .d.ts per module);
//  - code: one ES module per entry point of package.json ("exports" and "bin"), bundled by
//    esbuild with the code they share split into dist/chunks/ (each source module exists once,
//    so `instanceof` holds between entry points). A process loads ~15 files instead of ~130
//    modules: a worker is ready ~80 ms sooner and holds ~2 MiB less (bench/PROFILE.md);
//  - the Lua scripts are embedded (src/redis/lua.ts is replaced by a module holding their text);
//  - characters beyond Latin-1 left in the output (in comments) become ASCII (see below);
//  - the CLI entry point is made executable.
// Usage: node scripts/build.mjs [--outdir=DIR] [--no-types]   (default dist/, with declarations;
// bench/snapshot.mjs builds a private copy with --outdir=.tmp/bench-dist --no-types)
import { execFileSync } from "node:child_process";
import { chmodSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = fileURLToPath(new URL("..", import.meta.url));
const src = join(root, "src");
const args = process.argv.slice(2);
const outdirArg = args.find((a) => a.startsWith("--outdir="))?.slice("--outdir=".length);
const dist = resolve(root, outdirArg ?? "dist");
const withTypes = !args.includes("--no-types");
const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));

rmSync(dist, { recursive: true, force: true });
if (withTypes) {
  const tsc = join(root, "node_modules/typescript/bin/tsc");
  execFileSync(process.execPath, [tsc, "-p", "tsconfig.build.json", "--outDir", dist], { cwd: root, stdio: "inherit" });
}

/** `./dist/x/y.js` -> `src/x/y.ts` (package.json's targets) */
const toSource = (target) => join(src, target.replace(/^\.\/dist\//, "").replace(/\.js$/, ".ts"));
const targets = [
  ...Object.values(pkg.exports).flatMap((e) => (typeof e === "object" && e.default ? [e.default] : [])),
  ...Object.values(pkg.bin),
];
const entryPoints = [...new Set(targets.map(toSource))];

function files(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? files(path) : [path];
  });
}

/** Replaces src/redis/lua.ts with a module that holds every Lua script under src/. */
const embedLua = {
  name: "embed-lua",
  setup(b) {
    b.onLoad({ filter: /[\\/]src[\\/]redis[\\/]lua\.ts$/ }, () => {
      const scripts = files(src)
        .filter((f) => f.endsWith(".lua"))
        .map((f) => [relative(src, f).split(sep).join("/"), readFileSync(f, "utf8")]);
      return {
        loader: "js",
        contents: `const SCRIPTS = new Map(${JSON.stringify(scripts)});
/** The text of the Lua script at \`path\` (relative to \`src/\`), embedded by the build. */
export function readLua(path) {
  const text = SCRIPTS.get(path);
  if (text === undefined) throw new Error(\`chicory: no Lua script \${path} in this build\`);
  return text;
}
`,
      };
    });
  },
};

const result = await build({
  entryPoints,
  absWorkingDir: root,
  outbase: src,
  outdir: dist,
  bundle: true,
  splitting: true,
  format: "esm",
  platform: "node",
  target: "node20",
  packages: "external",
  // error classes take their name from `new.target.name`: keep every class and function name
  keepNames: true,
  sourcemap: "linked",
  sourcesContent: true,
  chunkNames: "chunks/[name]-[hash]",
  metafile: true,
  logLevel: "warning",
  plugins: [embedLua],
});

// Modules that find files relative to their own URL must stay in the CLI's entry file:
// supervisor.ts forks ./main.js, version.ts reads ../../package.json.
const cliOut = relative(root, join(dist, Object.values(pkg.bin)[0].replace(/^\.\/dist\//, "")))
  .split(sep)
  .join("/");
const placed = (source) =>
  Object.entries(result.metafile.outputs).find(([, o]) => Object.keys(o.inputs).includes(source))?.[0];
for (const source of ["src/cli/supervisor.ts", "src/cli/version.ts"]) {
  const out = placed(source);
  if (out !== cliOut) throw new Error(`build: ${source} went to ${out}, not ${cliOut}: its relative paths would break`);
}

// V8 holds a module's source as one-byte (Latin-1) text only if every character fits: one
// character beyond (a "…" or "→" in a comment esbuild keeps; it escapes those of strings)
// makes it hold the whole file as two-byte text, twice the memory (~300 KiB for the Redis
// chunk). Such characters, which are only in comments here, become one ASCII character each
// (two for one outside the BMP), so every column, and the source maps, stay as they were.
const ASCII_FOR = { "…": ".", "–": "-", "—": "-", "−": "-", "→": ">", "←": "<", "≤": "<", "≥": ">", "≈": "~" };
for (const out of Object.keys(result.metafile.outputs).filter((f) => f.endsWith(".js"))) {
  const path = join(root, out);
  const text = readFileSync(path, "utf8");
  const ascii = text.replace(/[\u{100}-\u{10ffff}]/gu, (c) => ASCII_FOR[c] ?? "?".repeat(c.length));
  if (ascii !== text) writeFileSync(path, ascii);
}

chmodSync(join(root, cliOut), 0o755);
