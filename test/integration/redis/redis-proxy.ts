/**
 * A TCP proxy for tests in front of a Redis server, with hooks on what passes through.
 * @module
 */
import { type AddressInfo, connect, createServer, type Socket } from "node:net";

/** What a {@link redisProxy} may change. */
export interface RedisProxyOptions {
  /** Asked for each new connection: true closes it at once. */
  readonly refuse?: () => boolean;
  /** Changes the server's replies on their way back (latin1: a rewrite that keeps lengths keeps RESP valid). */
  readonly rewrite?: (reply: string) => string;
  /**
   * Made for each connection: handles each chunk the client sends, passing it on (now, later or
   * never) with `forward`. Without it, chunks pass at once.
   */
  readonly fromClient?: () => (chunk: Buffer, forward: (chunk: Buffer) => void) => void;
}

/** A TCP proxy on a free local port to the Redis at `host:port` (see {@link RedisProxyOptions}). */
export async function redisProxy(
  host: string,
  port: number,
  options: RedisProxyOptions = {},
): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  const proxy = createServer((socket) => {
    sockets.add(socket);
    if (options.refuse?.()) {
      socket.destroy();
      return;
    }
    const upstream = connect(port, host);
    sockets.add(upstream);
    const onChunk = options.fromClient?.();
    if (onChunk === undefined) socket.pipe(upstream);
    else socket.on("data", (chunk: Buffer) => onChunk(chunk, (c) => upstream.write(c)));
    const { rewrite } = options;
    if (rewrite === undefined) upstream.pipe(socket);
    else upstream.on("data", (chunk: Buffer) => socket.write(Buffer.from(rewrite(chunk.toString("latin1")), "latin1")));
    const closeBoth = () => {
      socket.destroy();
      upstream.destroy();
    };
    for (const side of [socket, upstream]) side.on("error", () => undefined).on("close", closeBoth);
  });
  await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
  return {
    port: (proxy.address() as AddressInfo).port,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => proxy.close(resolve));
    },
  };
}
