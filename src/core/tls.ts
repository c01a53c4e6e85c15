/**
 * TLS settings from the environment, shared by the Redis and RabbitMQ adapters:
 * `<PREFIX>_TLS_CA` (a PEM file path, or the PEM text itself) and
 * `<PREFIX>_TLS_REJECT_UNAUTHORIZED` (default true: verification is off only by explicit opt-in).
 * @module
 */
import { readFileSync } from "node:fs";
import { ConfigurationError } from "../errors.js";
import { type EnvMap, envBool, envString } from "./env.js";
import { warnOnce } from "./warn-once.js";

/**
 * TLS settings from `${envPrefix}_TLS_CA` (a PEM file path, or the PEM text itself) and
 * `${envPrefix}_TLS_REJECT_UNAUTHORIZED` (default true), or undefined when neither is set.
 */
export function envTls(env: EnvMap, envPrefix: string): Record<string, unknown> | undefined {
  const caName = `${envPrefix}_TLS_CA`;
  const verifyName = `${envPrefix}_TLS_REJECT_UNAUTHORIZED`;
  const ca = envString(env, caName);
  const verify = envString(env, verifyName);
  if (ca === undefined && verify === undefined) return undefined;
  return {
    ...(ca === undefined ? {} : { ca: readCa(ca, caName) }),
    ...(verify === undefined ? {} : { rejectUnauthorized: envBool(env, verifyName, true) }),
  };
}

/** The PEM text of `value` (PEM text, or the path of a PEM file). */
function readCa(value: string, name: string): string {
  let pem = value;
  if (!value.trimStart().startsWith("-----BEGIN")) {
    try {
      pem = readFileSync(value, "utf8");
    } catch (error) {
      throw new ConfigurationError(`${name}: cannot read ${JSON.stringify(value)}: ${(error as Error).message}`, {
        cause: error,
      });
    }
  }
  if (!pem.includes("-----BEGIN CERTIFICATE-----")) {
    throw new ConfigurationError(
      `${name}: expected a PEM certificate (-----BEGIN CERTIFICATE-----) or the path of one`,
    );
  }
  return pem;
}

/** One process warning per target when certificate verification is switched off. */
export function warnTlsUnverified(what: string, displayUrl: string, envPrefix: string): void {
  warnOnce(
    `tls ${what} ${displayUrl}`,
    `${what}: TLS certificate verification is disabled for ${displayUrl} (rejectUnauthorized: false / ${envPrefix}_TLS_REJECT_UNAUTHORIZED=false); the connection is not protected against an impostor server`,
    "CHICORY_TLS_UNVERIFIED",
  );
}
