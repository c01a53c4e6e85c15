/**
 * A TCP proxy on a free loopback port in front of a shared database server, to take the
 * database "down" for one backend without touching the server: `down()` refuses new
 * connections and resets the open ones, `up()` accepts again on the same port; `freeze()` keeps
 * every connection open but forwards nothing (a stalled server, a half-open link) until `thaw()`;
 * `silenceOpen()` makes the connections open now forward nothing for good while new ones work
 * (a NAT or firewall that dropped those links).
 */
import { createServer, type Server, type Socket, connect as tcpConnect } from "node:net";

/** See module doc. */
export class OutageProxy {
  readonly #target: { readonly host: string; readonly port: number };
  readonly #sockets = new Set<Socket>();
  /** Client-side sockets open now, and who waits for none to be. */
  readonly #clients = new Set<Socket>();
  #noClients: Array<() => void> = [];
  #onDrop: Array<() => void> = [];
  /** Sockets whose data is dropped. */
  readonly #silenced = new WeakSet<Socket>();
  #server: Server | undefined;
  #port = 0;
  #isFrozen = false;
  #accepted = 0;
  #onAccept: Array<{ readonly count: number; readonly resolve: () => void }> = [];
  /** Writes held while frozen, in order. */
  #held: Array<() => void> = [];

  constructor(targetUrl: string, defaultPort: number) {
    const url = new URL(targetUrl);
    this.#target = { host: url.hostname || "127.0.0.1", port: Number(url.port) || defaultPort };
  }

  /** The port it listens on (0 before {@link OutageProxy.up}). */
  get port(): number {
    return this.#port;
  }

  /** `url` with its host and port replaced by the proxy's. */
  urlFor(url: string): string {
    const parsed = new URL(url);
    parsed.hostname = "127.0.0.1";
    parsed.port = String(this.#port);
    return parsed.toString();
  }

  /** Listens (on a free port the first time, on the same port after a `down()`). */
  up(): Promise<number> {
    if (this.#server !== undefined) return Promise.resolve(this.#port);
    const server = createServer((client) => this.#accept(client));
    this.#server = server;
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.#port, "127.0.0.1", () => {
        server.off("error", reject);
        const address = server.address();
        this.#port = typeof address === "object" && address !== null ? address.port : 0;
        resolve(this.#port);
      });
    });
  }

  /** Forwards nothing more, either way, until {@link OutageProxy.thaw}; connections stay open. */
  freeze(): void {
    this.#isFrozen = true;
  }

  /** The connections open now forward nothing more, either way, for good; new ones work. */
  silenceOpen(): void {
    for (const socket of this.#sockets) this.#silenced.add(socket);
  }

  /** Resolves when the next chunk on a silenced connection is dropped (a statement was sent). */
  dropped(): Promise<void> {
    return new Promise((resolve) => this.#onDrop.push(resolve));
  }

  /** How many client connections it has accepted in all. */
  get accepted(): number {
    return this.#accepted;
  }

  /** Resolves once it has accepted `count` client connections in all. */
  acceptedCount(count: number): Promise<void> {
    if (this.#accepted >= count) return Promise.resolve();
    return new Promise((resolve) => this.#onAccept.push({ count, resolve }));
  }

  /** How many client connections are open. */
  get connections(): number {
    return this.#clients.size;
  }

  /** Resolves once no client connection is open. */
  noConnections(): Promise<void> {
    if (this.#clients.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#noClients.push(resolve));
  }

  /** Forwards what was held while frozen, then everything again. */
  thaw(): void {
    this.#isFrozen = false;
    for (const write of this.#held.splice(0)) write();
  }

  /** Refuses new connections and resets every open one (a database server gone). */
  async down(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    for (const socket of this.#sockets) {
      if (socket.connecting || socket.destroyed) socket.destroy();
      else socket.resetAndDestroy();
    }
    this.#sockets.clear();
    if (server !== undefined) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  #accept(client: Socket): void {
    this.#accepted++;
    const upstream = tcpConnect(this.#target);
    this.#sockets.add(client);
    this.#sockets.add(upstream);
    this.#clients.add(client);
    const gone = () => {
      for (const socket of [client, upstream]) {
        this.#sockets.delete(socket);
        socket.destroy();
      }
      this.#clients.delete(client);
      if (this.#clients.size === 0) for (const resolve of this.#noClients.splice(0)) resolve();
    };
    for (const socket of [client, upstream]) {
      socket.on("error", gone);
      socket.on("close", gone);
    }
    const forward = (from: Socket, to: Socket) =>
      from.on("data", (chunk: Buffer) => {
        if (this.#silenced.has(from)) {
          for (const resolve of this.#onDrop.splice(0)) resolve();
          return;
        }
        if (this.#isFrozen) this.#held.push(() => to.write(chunk));
        else to.write(chunk);
      });
    forward(client, upstream);
    forward(upstream, client);
    const reached = this.#onAccept.filter((w) => w.count <= this.#accepted);
    this.#onAccept = this.#onAccept.filter((w) => w.count > this.#accepted);
    for (const w of reached) w.resolve();
  }
}
