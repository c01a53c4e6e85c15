/**
 * Loads the user's app from `<module>[:export]`: a `.ts`/`.mts`/`.cts` file (through tsx, no
 * build step) or a `.js`/`.mjs`/`.cjs` file, relative to the working directory. The export
 * is `app` by default (else a default export that is an app). Problems are reported as
 * one-line usage errors naming the file and, for a missing export, the exports found.
 * @module
 */
import { existsSync, statSync } from "node:fs";
import { extname, relative, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { Chicory } from "../app.js";
import { CliFailure, CliUsageError, EXIT_USAGE, exitCodeFor } from "./output.js";

/** A `<module>[:export]` argument, split. */
export interface ModuleSpec {
  /** The file as written. */
  readonly file: string;
  /** The export named after `:`, if any. */
  readonly exportName: string | undefined;
}

/** What {@link loadApp} returns. */
export interface LoadedApp {
  /** The app. */
  readonly app: Chicory;
  /** Absolute path of the module. */
  readonly path: string;
  /** The export the app was found under. */
  readonly exportName: string;
  /** `file:export` for display. */
  readonly display: string;
}

const TS_EXTENSIONS = [".ts", ".mts", ".cts", ".tsx"];
const JS_EXTENSIONS = [".js", ".mjs", ".cjs"];
const IDENTIFIER = /^[A-Za-z_$][\w$]*$/;

/** Splits `path/to/app.ts:myApp` into file and export name. */
export function parseModuleSpec(spec: string): ModuleSpec {
  const colon = spec.lastIndexOf(":");
  if (colon > 1) {
    const exportName = spec.slice(colon + 1);
    if (IDENTIFIER.test(exportName)) return { file: spec.slice(0, colon), exportName };
  }
  return { file: spec, exportName: undefined };
}

/**
 * True for a Chicory app: an instance of this copy of the class, or an object with the
 * app's shape (the user's module may load another copy of the package).
 */
export function isChicoryApp(value: unknown): value is Chicory {
  if (value instanceof Chicory) return true;
  if (typeof value !== "object" || value === null) return false;
  const o = value as Record<string, unknown>;
  const tasks = o.tasks as { get?: unknown; keys?: unknown } | undefined;
  const broker = o.broker as { publish?: unknown; consumer?: unknown } | undefined;
  return (
    typeof o.task === "function" &&
    typeof o.getTask === "function" &&
    typeof o.connect === "function" &&
    typeof o.disconnect === "function" &&
    typeof tasks?.get === "function" &&
    typeof tasks.keys === "function" &&
    typeof broker?.publish === "function" &&
    typeof broker.consumer === "function" &&
    typeof o.config === "object" &&
    o.config !== null
  );
}

function resolveFile(file: string, cwd: string): string {
  const path = resolve(cwd, file);
  if (existsSync(path) && statSync(path).isFile()) return path;
  if (extname(path) === "") {
    for (const ext of [...TS_EXTENSIONS, ...JS_EXTENSIONS]) {
      if (existsSync(path + ext)) return path + ext;
    }
  }
  const where = relative(cwd, path) === file ? "" : ` (resolved to ${path})`;
  throw new CliUsageError(`module not found: ${file}${where}`);
}

async function importModule(path: string): Promise<Record<string, unknown>> {
  const ext = extname(path).toLowerCase();
  const url = pathToFileURL(path).href;
  if (TS_EXTENSIONS.includes(ext)) {
    const { tsImport } = await import("tsx/esm/api");
    return (await tsImport(url, { parentURL: import.meta.url })) as Record<string, unknown>;
  }
  if (JS_EXTENSIONS.includes(ext)) return (await import(url)) as Record<string, unknown>;
  throw new CliUsageError(
    `cannot load ${path}: use a ${[...TS_EXTENSIONS, ...JS_EXTENSIONS].join(", ")} file (module[:export])`,
  );
}

/** Codes Node gives a module that cannot be resolved or linked. */
const MODULE_ERROR_CODES = new Set([
  "ERR_MODULE_NOT_FOUND",
  "MODULE_NOT_FOUND",
  "ERR_UNSUPPORTED_DIR_IMPORT",
  "ERR_PACKAGE_PATH_NOT_EXPORTED",
  "ERR_UNKNOWN_FILE_EXTENSION",
  "ERR_REQUIRE_ESM",
]);

/** The first `at …` line of a stack ("" when there is none). */
function firstFrame(stack: string | undefined): string {
  return /^\s+at [^\n]*/m.exec(stack ?? "")?.[0] ?? "";
}

/**
 * A problem in the module's source or its imports (a syntax error, a TypeScript file that does
 * not transform, an import that does not resolve or link), not one met while it ran.
 */
function isModuleProblem(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  // One from parsing or linking a module is thrown by Node's loader (its first frame is
  // `node:internal`); one the module's code threw while it ran (`JSON.parse` of a bad file)
  // comes from that code.
  if (error instanceof SyntaxError) return firstFrame(error.stack).includes("node:internal/");
  const code = (error as { code?: unknown }).code;
  if (typeof code === "string" && MODULE_ERROR_CODES.has(code)) return true;
  // tsx reports a TypeScript file esbuild cannot transform as an Error named TransformError.
  return error.name === "TransformError";
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (typeof value === "function") return `a function${value.name ? ` (${value.name})` : ""}`;
  if (typeof value === "object") {
    const name = (value as { constructor?: { name?: string } }).constructor?.name;
    return name && name !== "Object" ? `an instance of ${name}` : "an object";
  }
  return `a ${typeof value}`;
}

/** Named exports, also looking inside a CommonJS `default` object. */
function exportsOf(ns: Record<string, unknown>): Record<string, unknown> {
  const fallback = ns.default;
  if (typeof fallback === "object" && fallback !== null && !isChicoryApp(fallback)) {
    return { ...(fallback as Record<string, unknown>), ...ns };
  }
  return ns;
}

/** Loads `<module>[:export]` and returns the app. */
export async function loadApp(spec: string, cwd: string = process.cwd()): Promise<LoadedApp> {
  const { file, exportName } = parseModuleSpec(spec);
  if (!file) throw new CliUsageError(`missing module: pass <module>[:export], e.g. ./app.ts:app`);
  const path = resolveFile(file, cwd);
  let ns: Record<string, unknown>;
  try {
    ns = exportsOf(await importModule(path));
  } catch (error) {
    if (error instanceof CliUsageError) throw error;
    const message = `cannot load ${file}: ${error instanceof Error ? error.message : String(error)}`;
    throw exitCodeFor(error) === EXIT_USAGE || isModuleProblem(error)
      ? new CliUsageError(message, { cause: error })
      : new CliFailure(message, { cause: error });
  }
  const names = Object.keys(ns).filter((name) => name !== "__esModule");
  const candidates = exportName ? [exportName] : ["app", "default"];
  for (const name of candidates) {
    if (!(name in ns) || ns[name] === undefined) continue;
    const value = ns[name];
    if (!isChicoryApp(value)) {
      throw new CliUsageError(`export "${name}" of ${file} is not a Chicory app (it is ${describe(value)})`);
    }
    return { app: value, path, exportName: name, display: `${file}:${name}` };
  }
  const apps = names.filter((name) => isChicoryApp(ns[name]));
  const hint = apps.length > 0 ? `; did you mean ${file}:${apps[0]}?` : "";
  const found = names.length > 0 ? names.join(", ") : "none";
  const wanted = exportName ? `"${exportName}"` : `"app" (nor a default export)`;
  throw new CliUsageError(`${file} has no export ${wanted}; exports found: ${found}${hint}`);
}
