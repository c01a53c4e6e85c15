/**
 * What a Redis server says, unasked, to a connection it refuses as it accepts it: `-ERR max
 * number of clients reached` (its `maxclients`), `-DENIED Redis is running in protected mode
 * ...`. It writes that line and closes; ioredis, which writes its handshake first, sees only
 * the closed connection (`EPIPE`, `ECONNRESET`, "Connection is closed"), which would otherwise
 * be reported as a port or TLS mistake.
 * @module
 */
import { connect } from "node:net";

/** How long the one-off connection waits for the server's first line. */
const GREETING_WAIT_MS = 500;

/** Where a plain (not TLS) connection reaches the server: a host and port, or a socket path. */
export type PlainAddress = { readonly host: string; readonly port: number } | { readonly path: string };

/**
 * The line a server sends on its own to a new connection, without its leading `-` (`ERR max
 * number of clients reached`), or undefined when it sends none within {@link GREETING_WAIT_MS}
 * (a Redis that waits for a command, as one that accepts the connection does) or cannot be
 * reached. Opens one plain connection that sends nothing; never rejects.
 */
export function refusalOnConnect(address: PlainAddress, waitMs = GREETING_WAIT_MS): Promise<string | undefined> {
  return new Promise((resolve) => {
    let text = "";
    let isDone = false;
    const socket =
      "path" in address ? connect({ path: address.path }) : connect({ host: address.host, port: address.port });
    const done = (line: string | undefined) => {
      if (isDone) return;
      isDone = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(line);
    };
    const timer = setTimeout(() => done(undefined), waitMs);
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      text += chunk;
      const end = text.indexOf("\r\n");
      if (end >= 0 || text.length > 512) {
        const line = (end >= 0 ? text.slice(0, end) : text).slice(0, 300);
        done(line.startsWith("-") ? line.slice(1) : undefined);
      }
    });
    socket.on("error", () => done(undefined));
    socket.on("close", () => done(text.startsWith("-") ? text.slice(1).trim().slice(0, 300) : undefined));
  });
}

/** What to do about a refusal {@link refusalOnConnect} read: a hint for the common ones, else "". */
export function refusalHint(line: string): string {
  if (/max number of clients/i.test(line)) {
    return "Redis refuses new connections past its maxclients (CONFIG GET maxclients): raise it, or close clients; a worker opens 3 connections, a producer 2 (3 once it waits for results)";
  }
  if (/protected mode/i.test(line))
    return "Redis's protected mode refuses connections from other hosts: see its message";
  return "";
}

/** The plain address of an ioredis client's options, or undefined (TLS, sentinels, none given). */
export function plainAddressOf(options: Record<string, unknown> | undefined): PlainAddress | undefined {
  // (an ioredis client's options hold null for those not given)
  if (options === undefined || options.tls != null || options.sentinels != null) return undefined;
  if (typeof options.path === "string") return { path: options.path };
  const host = typeof options.host === "string" ? options.host : "127.0.0.1";
  const port = typeof options.port === "number" ? options.port : 6379;
  return { host, port };
}
