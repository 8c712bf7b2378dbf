// Shared setup for the tests: the real server from scripts/with-test-server.sh, fresh
// stores and accounts, a listener that records what the receive loop delivers, and a
// TCP proxy that can make the server unreachable.
'use strict'

const crypto = require('node:crypto')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')

const { CourierClient } = require('..')

const SERVER = process.env.COURIER_TEST_SERVER
if (!SERVER) {
  throw new Error('COURIER_TEST_SERVER is not set: run the tests under scripts/with-test-server.sh')
}

const PASSWORD = 'correct horse battery staple'

/** A new empty directory, removed when the test process exits. */
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'courier-node-test-'))
process.on('exit', () => fs.rmSync(scratch, { recursive: true, force: true }))

function storePath() {
  return path.join(scratch, `${crypto.randomBytes(6).toString('hex')}.db`)
}

function storeKey() {
  return crypto.randomBytes(32)
}

function username() {
  return `n${crypto.randomBytes(8).toString('hex')}`
}

/** A new account and its first device. */
async function register(server = SERVER) {
  const name = username()
  const device = await newDevice((d) => CourierClient.register(server, d.storePath, d.key, name, PASSWORD, 'node-1'))
  return { ...device, username: name }
}

/** Another device of `user` (a fresh store). */
async function login(user, server = SERVER, deviceName = 'node-n') {
  const device = await newDevice((d) => CourierClient.login(server, d.storePath, d.key, user.username, PASSWORD, deviceName))
  return { ...device, username: user.username }
}

async function newDevice(make) {
  const device = { storePath: storePath(), key: storeKey() }
  device.client = await make(device)
  device.userId = device.client.ownDevice.userId
  device.deviceId = device.client.ownDevice.deviceId
  return device
}

/**
 * Starts the receive loop of `client` and records every callback. `until(predicate)`
 * resolves once `predicate(recorder)` holds (checked after every callback); the test
 * runner's timeout bounds the wait. `options.onEvents` may replace the default handling
 * (it receives the batch and returns what onEvents should return).
 */
function listen(client, options = {}) {
  const recorder = { events: [], batches: [], states: [], errors: [], stacks: [] }
  const waiters = []
  const check = () => {
    for (const waiter of [...waiters]) {
      if (waiter.predicate(recorder)) {
        waiters.splice(waiters.indexOf(waiter), 1)
        waiter.resolve(recorder)
      }
    }
  }
  recorder.handle = client.startReceiving({
    onEvents(batch) {
      recorder.stacks.push(new Error('where').stack)
      recorder.batches.push(batch)
      try {
        const result = options.onEvents ? options.onEvents(batch, recorder) : undefined
        recorder.events.push(...batch)
        return result
      } finally {
        setImmediate(check)
      }
    },
    onConnectionState(state) {
      recorder.states.push(state)
      setImmediate(check)
    },
    onError(error) {
      recorder.errors.push(error)
      setImmediate(check)
    },
  })
  recorder.until = (predicate) =>
    new Promise((resolve) => {
      waiters.push({ predicate, resolve })
      check()
    })
  recorder.messages = (type = 'message') => recorder.events.filter((e) => e.type === type)
  return recorder
}

/** Resolves with `fn`'s rejection (the test fails if it resolves). */
async function rejection(promise) {
  try {
    await promise
  } catch (error) {
    return error
  }
  throw new Error('expected the call to fail, and it succeeded')
}

/**
 * A TCP proxy in front of the test server. `mode`: 'up' forwards; 'down' refuses
 * connections (the listening socket is closed); 'drop-message-responses' forwards
 * everything but answers a `POST /v1/messages` with a closed connection (the server
 * stored the message, the client never hears so).
 */
class Proxy {
  constructor() {
    const target = new URL(SERVER)
    this.target = { host: target.hostname, port: Number(target.port) }
    this.sockets = new Set()
    this.mode = 'up'
    this.port = 0
    this.server = null
  }

  get url() {
    return `http://127.0.0.1:${this.port}`
  }

  async start() {
    this.server = net.createServer((client) => this.#connect(client))
    await new Promise((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(this.port, '127.0.0.1', resolve)
    })
    this.port = this.server.address().port
  }

  async setMode(mode) {
    if (mode === 'down') {
      for (const socket of this.sockets) socket.destroy()
      await new Promise((resolve) => this.server.close(() => resolve()))
    } else if (this.mode === 'down') {
      await this.start()
    }
    this.mode = mode
  }

  async stop() {
    await this.setMode('down')
  }

  #connect(client) {
    const upstream = net.connect(this.target)
    this.sockets.add(client)
    this.sockets.add(upstream)
    let poisoned = false
    client.on('data', (chunk) => {
      if (this.mode === 'drop-message-responses' && /^POST \/v1\/messages /m.test(chunk.toString('latin1'))) {
        poisoned = true
      }
      upstream.write(chunk)
    })
    upstream.on('data', (chunk) => {
      if (poisoned) {
        client.destroy()
        upstream.destroy()
        return
      }
      client.write(chunk)
    })
    const close = () => {
      client.destroy()
      upstream.destroy()
      this.sockets.delete(client)
      this.sockets.delete(upstream)
    }
    client.on('close', close)
    upstream.on('close', close)
    client.on('error', close)
    upstream.on('error', close)
  }
}

module.exports = { SERVER, PASSWORD, CourierClient, storePath, storeKey, username, register, login, listen, rejection, Proxy, scratch }
