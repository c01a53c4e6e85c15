/**
 * A chaos TCP proxy on loopback (after pg-boss `test/halfOpenProxy.ts`): forwards
 * 127.0.0.1:<port> to a target port and can
 * - `cut()`: reset every open connection on both sides (RST, as a crashed peer or a dropped
 *   NAT entry);
 * - `stall()`: stop forwarding on every open connection, both ways, without closing anything
 *   (half-open: the client's writes succeed, no reply ever comes); new connections still pass;
 * - `refuse(true)`: reset every connection it accepts from now on (with `cut()`: a server that
 *   went away), until `refuse(false)`;
 * - `heal()`: forward what the stalled connections buffered and carry on;
 * - `retarget(port)`: send new connections to another port.
 * It records when a client gives up on a stalled connection (closes it): that is the client
 * detecting the half-open socket.
 */
import { createServer, type Server, type Socket, connect as tcpConnect } from "node:net";

interface Pair {
  readonly client: Socket;
  readonly upstream: Socket;
  stalled: boolean;
  /** Buffered while stalled: [towardsUpstream, towardsClient]. */
  readonly held: [Buffer[], Buffer[]];
  closed: boolean;
}

/** See module doc. */
export class ChaosProxy {
  #targetPort: number;
  readonly #pairs = new Set<Pair>();
  #server: Server | null = null;
  /** Times (epoch ms) at which a client closed a connection while it was stalled. */
  readonly stalledClosedAt: number[] = [];
  /** Connections accepted so far. */
  accepted = 0;
  /** Connections reset as soon as accepted (see {@link ChaosProxy.refuse}). */
  refused = 0;
  #refusing = false;

  constructor(targetPort: number) {
    this.#targetPort = targetPort;
  }

  /** Listens on a free loopback port; resolves to it. */
  listen(): Promise<number> {
    const server = createServer((client) => this.#accept(client));
    this.#server = server;
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => {
        const address = server.address();
        resolve(typeof address === "object" && address ? address.port : 0);
      });
    });
  }

  /** New connections go to `port` from now on (open ones stay where they are: a failover behind one address). */
  retarget(port: number): void {
    this.#targetPort = port;
  }

  /** Open (not closed) connections. */
  get open(): number {
    return [...this.#pairs].filter((p) => !p.closed).length;
  }

  /** Resets every open connection (RST both ways); returns how many. */
  cut(): number {
    let n = 0;
    for (const pair of this.#pairs) {
      if (pair.closed) continue;
      n++;
      this.#close(pair, true);
    }
    return n;
  }

  /** While `on`, every new connection is reset as soon as accepted. */
  refuse(on: boolean): void {
    this.#refusing = on;
  }

  /** Stops forwarding on every open connection without closing it; returns how many. */
  stall(): number {
    let n = 0;
    for (const pair of this.#pairs) {
      if (pair.closed) continue;
      pair.stalled = true;
      n++;
    }
    return n;
  }

  /** Still-open connections that are stalled. */
  get stalledOpen(): number {
    return [...this.#pairs].filter((p) => p.stalled && !p.closed).length;
  }

  /** Resumes forwarding on stalled connections (buffered data first). */
  heal(): void {
    for (const pair of this.#pairs) {
      if (!pair.stalled) continue;
      pair.stalled = false;
      if (pair.closed) continue;
      for (const chunk of pair.held[0].splice(0)) pair.upstream.write(chunk);
      for (const chunk of pair.held[1].splice(0)) pair.client.write(chunk);
    }
  }

  /** Closes the listener and every connection. */
  async close(): Promise<void> {
    for (const pair of this.#pairs) this.#close(pair, false);
    const server = this.#server;
    this.#server = null;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  #accept(client: Socket): void {
    this.accepted++;
    if (this.#refusing) {
      this.refused++;
      client.on("error", () => undefined);
      client.resetAndDestroy();
      return;
    }
    const upstream = tcpConnect({ host: "127.0.0.1", port: this.#targetPort });
    const pair: Pair = { client, upstream, stalled: false, held: [[], []], closed: false };
    this.#pairs.add(pair);
    client.on("data", (chunk: Buffer) => {
      if (pair.stalled) pair.held[0].push(chunk);
      else upstream.write(chunk);
    });
    upstream.on("data", (chunk: Buffer) => {
      if (pair.stalled) pair.held[1].push(chunk);
      else client.write(chunk);
    });
    const onClientGone = () => {
      if (pair.closed) return;
      if (pair.stalled) this.stalledClosedAt.push(Date.now());
      this.#close(pair, false);
    };
    const onUpstreamGone = () => {
      // While stalled, the client must not learn that the server went away.
      if (pair.closed || pair.stalled) return;
      this.#close(pair, false);
    };
    client.on("end", onClientGone);
    client.on("close", onClientGone);
    client.on("error", onClientGone);
    upstream.on("end", onUpstreamGone);
    upstream.on("close", onUpstreamGone);
    upstream.on("error", onUpstreamGone);
  }

  #close(pair: Pair, reset: boolean): void {
    pair.closed = true;
    for (const socket of [pair.client, pair.upstream]) {
      try {
        if (reset && !socket.destroyed && !socket.connecting) socket.resetAndDestroy();
        else socket.destroy();
      } catch {
        socket.destroy();
      }
    }
    this.#pairs.delete(pair);
  }
}
