// The benchmark behind scripts/bench-bindings-node.sh (run under with-test-server.sh with
// COURIER_DEVICE_LIMIT=10; COURIER_BENCH_RUST names the Rust baseline binary).
//
// Setup: a sender with 3 devices; a recipient with 7 (one message to it reaches 9
// devices: its 7 and the sender's 2 others); a channel of the two (a group message
// reaches the same 9); a sink with 4 devices (JS cold, JS queued, Rust cold, Rust
// queued), each holding MESSAGES direct messages the sender queued while nothing
// received. The sender's store is used by JS, closed, then by Rust, one after the other.
'use strict'

const { execFileSync } = require('node:child_process')
const crypto = require('node:crypto')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const { CourierClient } = require('..')

const SERVER = process.env.COURIER_TEST_SERVER
const RUST = process.env.COURIER_BENCH_RUST
const MESSAGES = Number(process.argv[2] || 5000)
const SENDS = Number(process.argv[3] || 100)
const PASSWORD = 'correct horse battery staple'
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'courier-node-bench-'))
process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }))

const stores = new Map()
function store(name) {
  const entry = { path: path.join(dir, `${name}.db`), key: crypto.randomBytes(32) }
  stores.set(name, entry)
  return entry
}

async function register(user, device) {
  const s = store(device)
  return CourierClient.register(SERVER, s.path, s.key, user, PASSWORD, device)
}

async function login(user, device) {
  const s = store(device)
  return CourierClient.login(SERVER, s.path, s.key, user, PASSWORD, device)
}

const tag = crypto.randomBytes(4).toString('hex')
const ms = (start) => Number(process.hrtime.bigint() - start) / 1e6
function summary(times) {
  const sorted = [...times].sort((a, b) => a - b)
  return { median: sorted[Math.floor(sorted.length / 2)], mean: sorted.reduce((a, b) => a + b, 0) / sorted.length }
}

async function prepare() {
  const sender = await register(`sender-${tag}`, 'sender1')
  const others = [await login(`sender-${tag}`, 'sender2'), await login(`sender-${tag}`, 'sender3')]
  const recipient = await register(`recipient-${tag}`, 'recipient1')
  for (let n = 2; n <= 7; n++) others.push(await login(`recipient-${tag}`, `recipient${n}`))
  const sinkUser = `sink-${tag}`
  const sinks = { 'js-cold': await register(sinkUser, 'js-cold') }
  for (const name of ['js-queued', 'rust-cold', 'rust-queued']) sinks[name] = await login(sinkUser, name)
  const channel = await sender.createChannel([recipient.ownDevice.userId])
  if (channel.devices.length !== 10) throw new Error(`the channel has ${channel.devices.length} devices, not 10`)
  // Sessions with every device (the first sends open them) and the channel's sender key.
  await sender.send(recipient.ownDevice.userId, Buffer.from('sessions'))
  await sender.sendGroup(channel.channelId, Buffer.from('sender key'))
  // The sink's messages, sent while none of its devices receives.
  const sinkUserId = sinks['js-cold'].ownDevice.userId
  const started = process.hrtime.bigint()
  const concurrency = 4
  let next = 0
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < MESSAGES) {
        next += 1
        await sender.send(sinkUserId, Buffer.from(`message ${next}`))
      }
    }),
  )
  console.error(`bench: queued ${MESSAGES} messages for the sink in ${(ms(started) / 1000).toFixed(1)} s`)
  for (const client of [...others, recipient, ...Object.values(sinks)]) client.close()
  return { sender, recipientUserId: recipient.ownDevice.userId, channelId: channel.channelId }
}

async function fanoutJs({ sender, recipientUserId, channelId }) {
  for (let i = 0; i < 3; i++) {
    await sender.send(recipientUserId, Buffer.from('warm-up'))
    await sender.sendGroup(channelId, Buffer.from('warm-up'))
  }
  const body = Buffer.alloc(200, 'x')
  const direct = []
  for (let i = 0; i < SENDS; i++) {
    const start = process.hrtime.bigint()
    await sender.send(recipientUserId, body)
    direct.push(ms(start))
  }
  const group = []
  for (let i = 0; i < SENDS; i++) {
    const start = process.hrtime.bigint()
    await sender.sendGroup(channelId, body)
    group.push(ms(start))
  }
  return { direct: summary(direct), group: summary(group) }
}

async function eventsJs(name, mode) {
  const s = stores.get(name)
  const client = await CourierClient.open(s.path, s.key)
  if (mode === 'queued') await client.receiveUntilCaughtUp()
  let count = 0
  let done
  const finished = new Promise((resolve) => (done = resolve))
  const start = process.hrtime.bigint()
  const handle = client.startReceiving({
    onEvents(events) {
      for (const event of events) if (event.type === 'message') count += 1
      if (count >= MESSAGES) done(ms(start))
    },
  })
  const elapsed = await finished
  handle.cancel()
  await handle.wait()
  client.close()
  return { events: MESSAGES, ms: elapsed, perSecond: Math.round(MESSAGES / (elapsed / 1000)) }
}

function rust(...args) {
  return JSON.parse(execFileSync(RUST, args.map(String), { encoding: 'utf8' }).trim())
}

const hex = (name) => stores.get(name).key.toString('hex')

async function main() {
  const setup = await prepare()
  const fanout = { js: await fanoutJs(setup) }
  setup.sender.close()
  fanout.rust = rust('fanout', stores.get('sender1').path, hex('sender1'), setup.recipientUserId, setup.channelId, SENDS)

  const events = {}
  for (const mode of ['cold', 'queued']) {
    events[`js-${mode}`] = await eventsJs(`js-${mode}`, mode)
    events[`rust-${mode}`] = rust('events', stores.get(`rust-${mode}`).path, hex(`rust-${mode}`), MESSAGES, mode)
  }

  const f = (n) => n.toFixed(2)
  console.log(`\none message to 9 devices, ${SENDS} sends each (ms per call, median / mean)`)
  console.log(`  direct  JS ${f(fanout.js.direct.median)} / ${f(fanout.js.direct.mean)}   Rust ${f(fanout.rust.direct.median)} / ${f(fanout.rust.direct.mean)}`)
  console.log(`  group   JS ${f(fanout.js.group.median)} / ${f(fanout.js.group.mean)}   Rust ${f(fanout.rust.group.median)} / ${f(fanout.rust.group.mean)}`)
  console.log(`\n${MESSAGES} queued messages into the listener (events/s, wall time)`)
  for (const mode of ['cold', 'queued']) {
    const js = events[`js-${mode}`]
    const rs = events[`rust-${mode}`]
    console.log(`  ${mode.padEnd(7)} JS ${js.perSecond}/s (${js.ms.toFixed(0)} ms)   Rust ${rs.perSecond}/s (${rs.ms.toFixed(0)} ms)`)
  }
  console.log(`\nRESULT ${JSON.stringify({ messages: MESSAGES, sends: SENDS, fanout, events })}`)
}

main().catch((error) => {
  console.error(error)
  process.exitCode = 1
})
