/**
 * Lazy import of a driver package, turning "not installed" into a
 * {@link DriverNotInstalledError} that names the package.
 * @module
 */
import { DriverNotInstalledError } from "../../errors.js";

/**
 * Imports a driver with `load` (a literal `import("pkg")`) and returns its default export
 * when it has one (CommonJS packages), else the namespace.
 * @throws DriverNotInstalledError when the package cannot be imported
 */
export async function importDriver<T>(pkg: string, what: string, load: () => Promise<unknown>): Promise<T> {
  let mod: unknown;
  try {
    mod = await load();
  } catch (error) {
    throw new DriverNotInstalledError(pkg, what, { cause: error });
  }
  const withDefault = mod as { default?: unknown };
  return (withDefault.default ?? mod) as T;
}
