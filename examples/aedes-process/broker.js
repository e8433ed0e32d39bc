'use strict';
/**
 * An ordinary aedes MQTT broker on a plain net.Server: nothing in it knows about node-criu.
 * argv[2]: host, argv[3]: port, argv[4]: a file written once it listens.
 * run.js starts it detached with stdio on /dev/null (CRIU moves the whole process, and a pipe to
 * a process that stays behind could not move with it).
 */
const fs = require('node:fs');
const net = require('node:net');

const { Aedes } = require('aedes');

async function main() {
  const [host, port, readyFile] = process.argv.slice(2);
  const broker = await Aedes.createBroker();
  const server = net.createServer(broker.handle);
  server.listen(Number(port), host, () => fs.writeFileSync(readyFile, String(process.pid)));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
