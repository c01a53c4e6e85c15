// Preload (`node --import ./bench/lib/count-writes.mjs`): counts socket writes (calls of
// net.Socket#write, i.e. roughly write syscalls) and bytes of this process, and prints them on
// exit, prefixed with the process role. Diagnostic for PROFILE.md; not used by the timing runs.
import net from "node:net";

const write = net.Socket.prototype.write;
let calls = 0;
let bytes = 0;
net.Socket.prototype.write = function (chunk, ...rest) {
  calls++;
  bytes += typeof chunk === "string" ? Buffer.byteLength(chunk) : chunk.length;
  return write.call(this, chunk, ...rest);
};
process.on("exit", () => {
  const role = process.argv[2] ? `worker ${process.argv[2]}` : "producer";
  process.stderr.write(`[count-writes] ${role} pid=${process.pid} socketWrites=${calls} bytes=${bytes}\n`);
});
