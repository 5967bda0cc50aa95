// A tiny authoritative DNS server on 127.0.0.1 (UDP only) for the benchmark: A records for the
// given names, an empty answer for AAAA, NXDOMAIN for anything else. Portcullis resolves the
// origin's test name through it (--resolver), with a long TTL so it asks once.
import dgram from 'node:dgram';

/** Starts the server; `records` maps a lower-case name to its IPv4 addresses. */
export async function startDnsServer(records, ttl = 300) {
  const socket = dgram.createSocket('udp4');
  let queries = 0;
  socket.on('message', (msg, rinfo) => {
    if (msg.length < 12) return;
    const labels = [];
    let off = 12;
    for (;;) {
      const len = msg[off];
      if (len === undefined || len > 63) return;
      off += 1;
      if (len === 0) break;
      labels.push(msg.toString('latin1', off, off + len));
      off += len;
    }
    if (off + 4 > msg.length) return;
    queries++;
    const qtype = msg.readUInt16BE(off);
    const name = labels.join('.').toLowerCase();
    const ips = records[name];
    const answers = [];
    if (ips !== undefined && qtype === 1) {
      for (const ip of ips) {
        const rr = Buffer.alloc(16);
        rr.writeUInt16BE(0xc00c, 0); // name: pointer to the question
        rr.writeUInt16BE(1, 2); // A
        rr.writeUInt16BE(1, 4); // IN
        rr.writeUInt32BE(ttl, 6);
        rr.writeUInt16BE(4, 10);
        ip.split('.').forEach((b, i) => (rr[12 + i] = Number(b)));
        answers.push(rr);
      }
    }
    const header = Buffer.alloc(12);
    header.writeUInt16BE(msg.readUInt16BE(0), 0);
    // QR, AA, RD copied, RA; NXDOMAIN for unknown names.
    header.writeUInt16BE(0x8000 | 0x0400 | (msg.readUInt16BE(2) & 0x0100) | 0x0080 | (ips === undefined ? 3 : 0), 2);
    header.writeUInt16BE(1, 4);
    header.writeUInt16BE(answers.length, 6);
    socket.send(Buffer.concat([header, msg.subarray(12, off + 4), ...answers]), rinfo.port, rinfo.address);
  });
  await new Promise((resolve) => socket.bind(0, '127.0.0.1', resolve));
  const { port } = socket.address();
  return {
    server: `127.0.0.1:${port}`,
    get queries() {
      return queries;
    },
    close: () => new Promise((resolve) => socket.close(() => resolve())),
  };
}
