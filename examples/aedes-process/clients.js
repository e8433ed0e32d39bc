'use strict';
/**
 * mqtt.js clients: one subscriber on `aedes/#` and `publishers` publishers, each sending QoS 1
 * messages `aedes/<n>` carrying its sequence number every `intervalMs`. No client reconnects
 * (reconnectPeriod 0): a dropped connection shows up as a 'close' and as missing messages.
 * argv[2]: JSON { url, publishers, intervalMs }. Prints `flowing` once every publisher's first
 * message came back; on a `stop` line on stdin the publishers stop, wait for every PUBACK, and the
 * report follows as one JSON line: per publisher what was sent, received, duplicated, out of order.
 */
const readline = require('node:readline');

const mqtt = require('mqtt');

const { url, publishers, intervalMs } = JSON.parse(process.argv[2]);
const closes = [];
const sent = new Array(publishers).fill(0);
const received = new Array(publishers).fill(0);
const duplicates = new Array(publishers).fill(0);
const outOfOrder = new Array(publishers).fill(0);
const lastSeen = new Array(publishers).fill(-1);
let flowingSaid = false;

function connect(clientId) {
  const client = mqtt.connect(url, { clientId, reconnectPeriod: 0, clean: true, keepalive: 60 });
  client.on('close', () => {
    if (!client.stopping) closes.push(clientId);
  });
  client.on('error', (error) => console.error(`${clientId}: ${error.message}`));
  return new Promise((resolve, reject) => {
    client.once('connect', () => resolve(client));
    client.once('error', reject);
  });
}

function onMessage(topic, payload) {
  const n = Number(topic.split('/')[1]);
  const seq = Number(payload.toString());
  if (seq <= lastSeen[n]) duplicates[n] += 1;
  else if (seq !== lastSeen[n] + 1) outOfOrder[n] += 1;
  if (seq > lastSeen[n]) {
    lastSeen[n] = seq;
    received[n] += 1;
  }
  if (!flowingSaid && received.every((count) => count > 0)) {
    flowingSaid = true;
    console.log('flowing');
  }
}

async function main() {
  const subscriber = await connect('subscriber');
  subscriber.on('message', onMessage);
  await subscriber.subscribeAsync('aedes/#', { qos: 1 });
  const clients = await Promise.all(Array.from({ length: publishers }, (_, n) => connect(`publisher-${n}`)));
  const acks = [];
  const timers = clients.map((client, n) =>
    setInterval(() => {
      acks.push(client.publishAsync(`aedes/${n}`, String(sent[n]), { qos: 1 }));
      sent[n] += 1;
    }, intervalMs),
  );
  for await (const line of readline.createInterface({ input: process.stdin })) if (line.trim() === 'stop') break;
  for (const timer of timers) clearInterval(timer);
  await Promise.all(acks);
  // Every PUBACK is in: wait until the subscriber has every message, or reports what is missing.
  const deadline = Date.now() + 30000;
  while (received.some((count, n) => count < sent[n]) && Date.now() < deadline)
    await new Promise((resolve) => setTimeout(resolve, 50));
  for (const client of [subscriber, ...clients]) {
    client.stopping = true;
    await client.endAsync();
  }
  console.log(JSON.stringify({ sent, received, duplicates, outOfOrder, closes }));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
