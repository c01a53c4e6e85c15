/**
 * A redis-server the test starts itself (never the shared :6379), on a free loopback port,
 * with the persistence mode under test. Killed by PID; the data dir is the caller's.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createWriteStream } from "node:fs";
import { connect, createServer } from "node:net";
import { join } from "node:path";
import { sleepMs } from "./ledger.js";

/** `always`/`everysec`: AOF with that fsync policy; `none`: no persistence at all. */
export type RedisPersistence = "always" | "everysec" | "none";

/** A free TCP port on 127.0.0.1 (asked from the kernel). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** Sends PING; true on +PONG (false on -LOADING, refused, timeout). */
export function pingRedis(port: number, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port });
    let reply = "";
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once("error", () => done(false));
    socket.once("connect", () => socket.write("PING\r\n"));
    socket.on("data", (chunk) => {
      reply += chunk.toString();
      if (reply.includes("\r\n")) done(reply.startsWith("+PONG"));
    });
  });
}

/** A running redis-server child process. */
export class OwnRedis {
  readonly port: number;
  readonly dir: string;
  readonly persistence: RedisPersistence;
  #child: ChildProcess | null = null;
  #starts = 0;

  constructor(port: number, dir: string, persistence: RedisPersistence) {
    this.port = port;
    this.dir = dir;
    this.persistence = persistence;
  }

  /** `redis://127.0.0.1:<port>/0`. */
  get url(): string {
    return `redis://127.0.0.1:${this.port}/0`;
  }

  /** PID of the running server, or undefined. */
  get pid(): number | undefined {
    return this.#child?.pid;
  }

  /** Starts the server (same port and dir every time) and waits until it answers PING. */
  async start(timeoutMs = 15_000): Promise<void> {
    const args = ["--port", String(this.port), "--bind", "127.0.0.1", "--dir", this.dir, "--save", ""];
    if (this.persistence === "none") args.push("--appendonly", "no");
    else args.push("--appendonly", "yes", "--appendfsync", this.persistence);
    args.push("--maxmemory-policy", "noeviction", "--protected-mode", "yes");
    const log = createWriteStream(join(this.dir, `redis-${++this.#starts}.log`));
    const child = spawn("redis-server", args, { stdio: ["ignore", "pipe", "pipe"] });
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
    this.#child = child;
    const deadline = Date.now() + timeoutMs;
    while (!(await pingRedis(this.port))) {
      if (child.exitCode !== null) throw new Error(`redis-server exited with ${child.exitCode} (see ${this.dir})`);
      if (Date.now() > deadline) throw new Error(`redis-server on ${this.port} not ready in ${timeoutMs} ms`);
      await sleepMs(50);
    }
  }

  /** Sends `signal` to the server and waits for it to exit (SIGKILL: a crash). */
  async kill(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    const child = this.#child;
    this.#child = null;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    child.kill(signal);
    await Promise.race([exited, sleepMs(10_000)]);
  }
}
